#!/usr/bin/env bash
# Validates Tandem's deployment files without a cluster or a Docker engine:
#   - every manifest in deploy/kubernetes/ against the Kubernetes API's JSON schemas of the
#     oldest and the newest Kubernetes release below, strictly (an unknown field is an error);
#   - docker-compose.yml against the Compose specification's JSON schema;
#   - deploy/Dockerfile through Docker's own parser, and that its image runs as the non-root
#     user the manifests' securityContext names, with a health check;
#   - that every variable the manifests and the compose file give to tandem is one it reads
#     (a misspelt variable would be ignored without a word);
#   - that the ConfigMaps carry the demo's mapping and tables, and that every TOML file parses;
#   - the Grafana dashboard (JSON) and the Prometheus alert rules: every rule has an expression,
#     a duration, a severity, a summary and a runbook naming a heading of docs/OPERATIONS.md,
#     and every tandem_… metric either file uses is one that crates/*/src/metrics.rs reports.
# A duplicate key in any YAML or JSON file is an error too. Exits 1 when anything is wrong.
#
# The validators come from PyPI into a Python venv in the cache the first time (kubernetes-validate
# ships the Kubernetes schemas, check-jsonschema the Compose specification's, dockerfile Docker's
# parser); later runs reuse it as long as the pinned versions below are the ones installed.
#
#   bash tests/validate-deploy.sh [DIR]   DIR: a copy of the repository to check (default: this one)
#
#   TANDEM_CACHE   where the venv lives (default ~/.cache/tandem)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=$(cd "${1:-$root}" && pwd)
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
venv=$cache/venv
kubernetes_versions="1.29 1.37"

# Everything the venv holds, pinned, so that every machine validates alike.
requirements=(
  kubernetes-validate==1.37.0
  check-jsonschema==0.39.0
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  referencing==0.37.0
  rpds-py==2026.9.1
  attrs==26.1.0
  PyYAML==6.0.3
  packaging==26.4
  typing_extensions==4.16.0
  importlib_resources==7.1.0
  click==8.5.1
  regress==2026.9.1
  ruamel.yaml==0.19.1
  requests==2.34.2
  urllib3==2.8.0
  idna==3.20
  charset-normalizer==3.5.3
  certifi==2026.10.19.post1
  dockerfile==3.4.0
)

installed() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - "${requirements[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import PackageNotFoundError, version

for requirement in sys.argv[1:]:
    name, wanted = requirement.split("==")
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

if ! installed; then
  echo "installing the deployment validators into $venv (first run only)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "validate-deploy: needs Python 3.11 or newer (for tomllib)" >&2; exit 1; }
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "${requirements[@]}"
fi

"$venv/bin/python" - "$target" "$kubernetes_versions" <<'PY'
import glob
import json
import os
import re
import sys
import tomllib
from importlib.resources import files

import dockerfile
import jsonschema
import kubernetes_validate
import yaml

target, kubernetes_versions = sys.argv[1], sys.argv[2].split()
problems = []


def problem(where, message):
    if f"{where}: {message}" not in problems:
        problems.append(f"{where}: {message}")


def read(rel):
    try:
        with open(os.path.join(target, rel), encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        problem(rel, e.strerror)
        return None


def toml(where, text):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problem(where, f"not TOML: {e}")
        return None


class Loader(yaml.SafeLoader):
    """YAML as Kubernetes and Compose read it, except that a repeated key is an error."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_all(rel):
    text = read(rel)
    try:
        return [doc for doc in yaml.load_all(text or "", Loader=Loader) if doc is not None]
    except yaml.YAMLError as e:
        problem(rel, str(e).replace("\n", " "))
        return []


def dotted(path):
    return ".".join(str(p) for p in path) or "(top)"


def pod_spec(deployment):
    return ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}


# Every TOML file under deploy/ parses.
for path in sorted(glob.glob(os.path.join(target, "deploy", "**", "*.toml"), recursive=True)):
    rel = os.path.relpath(path, target)
    toml(rel, read(rel) or "")

# The variables tandem reads: every "TANDEM_…" name in the crates' sources, the NAME_FILE of
# every secret read through secret::read("NAME"), and those the image's health check reads
# (deploy/Dockerfile).
sources = ""
for path in glob.glob(os.path.join(target, "crates", "*", "src", "**", "*.rs"), recursive=True):
    with open(path, encoding="utf-8") as f:
        sources += f.read()
known_vars = set(re.findall(r'"(TANDEM_[A-Z0-9_]+)"', sources))
known_vars |= {name + "_FILE" for name in re.findall(r'\bread\(\s*"([A-Z][A-Z0-9_]*)"\s*\)', sources)}
dockerfile_text = read("deploy/Dockerfile")
known_vars |= set(re.findall(r"\b(TANDEM_[A-Z0-9_]+)", dockerfile_text or ""))


def check_vars(where, names):
    for name in names:
        if name not in known_vars:
            problem(where, f"tandem reads no variable {name}")


# Kubernetes: every document of every manifest, against each release's strict schemas.
manifests = sorted(
    os.path.relpath(path, target)
    for pattern in ("*.yaml", "*.yml")
    for path in glob.glob(os.path.join(target, "deploy", "kubernetes", pattern))
)
if not manifests:
    problem("deploy/kubernetes", "no manifests")
resources = {}
for rel in manifests:
    for doc in load_all(rel):
        if not isinstance(doc, dict):
            problem(rel, "a document that is not a mapping")
            continue
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        resources[name] = doc
        for version in kubernetes_versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                problem(f"{rel}: {name}", f"{dotted(e.path)}: {e.message} (Kubernetes {version})")
            except kubernetes_validate.SchemaNotFoundError as e:
                problem(f"{rel}: {name}", e.message)
            except Exception as e:  # a document without apiVersion or kind, among others
                problem(f"{rel}: {name}", f"cannot be validated: {e!r}")
        if doc.get("kind") == "ConfigMap":
            for key, value in (doc.get("data") or {}).items():
                if key.endswith(".toml"):
                    toml(f"{rel}: {name}: {key}", str(value))

# The variables the Deployments set, one by one (env) and whole ConfigMaps at a time (envFrom).
for name, doc in resources.items():
    if doc.get("kind") != "Deployment":
        continue
    for container in pod_spec(doc).get("containers") or []:
        where = f"deploy/kubernetes: {name}: {container.get('name')}"
        check_vars(where, [e.get("name") for e in container.get("env") or []])
        for source in container.get("envFrom") or []:
            ref = (source.get("configMapRef") or {}).get("name")
            config_map = resources.get(f"ConfigMap/{ref}")
            if config_map is None:
                problem(where, f"envFrom names ConfigMap {ref}, which no manifest defines")
            else:
                check_vars(f"deploy/kubernetes: ConfigMap/{ref}", (config_map.get("data") or {}).keys())


# The ConfigMaps' configuration files are the demo's: the mapping word for word, the sources'
# tables as docker-compose's sources file lists them.
def config_file(config_map, key):
    return ((resources.get(f"ConfigMap/{config_map}") or {}).get("data") or {}).get(key)


if config_file("tandem-mapping", "mapping.toml") != read("deploy/demo/mapping.toml"):
    problem("deploy/kubernetes: ConfigMap/tandem-mapping", "mapping.toml differs from deploy/demo/mapping.toml")
ours = toml("deploy/kubernetes: ConfigMap/tandem-sources", config_file("tandem-sources", "sources.toml") or "")
demo = toml("deploy/compose/sources.toml", read("deploy/compose/sources.toml") or "")
if ours is not None and demo is not None:
    if ours.get("tables") != demo.get("tables") or (ours.get("legacy") or {}).get("account_column") != (
        demo.get("legacy") or {}
    ).get("account_column"):
        problem("deploy/kubernetes: ConfigMap/tandem-sources", "the tables differ from deploy/compose/sources.toml")

# Compose: the whole file against the Compose specification's schema as check-jsonschema ships
# it, and the variables of the services that run the tandem image.
schema = yaml.safe_load(
    files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text(encoding="utf-8")
)
validator_class = jsonschema.validators.validator_for(schema)
validator_class.check_schema(schema)
validator = validator_class(schema)
for doc in load_all("docker-compose.yml"):
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path))):
        problem("docker-compose.yml", f"{dotted(error.path)}: {error.message}")
    services = (doc.get("services") if isinstance(doc, dict) else None) or {}
    for service, spec in services.items():
        if isinstance(spec, dict) and (str(spec.get("image", "")).startswith("tandem") or "build" in spec):
            environment = spec.get("environment") or {}
            names = environment.keys() if isinstance(environment, dict) else [e.split("=", 1)[0] for e in environment]
            check_vars(f"docker-compose.yml: services.{service}", names)

# The image: Docker's parser reads the Dockerfile; its last stage runs as a numeric non-root
# user (which runAsNonRoot can check), the one the Deployments name, has a health check and
# runs tandem.
instructions = []
if dockerfile_text is not None:
    try:
        instructions = dockerfile.parse_string(dockerfile_text)
    except dockerfile.GoParseError as e:
        problem("deploy/Dockerfile", str(e))
last_stage = []
for instruction in instructions:
    last_stage = [] if instruction.cmd == "FROM" else last_stage + [instruction]
    if instruction.cmd in ("COPY", "ADD") and len(instruction.value) < 2:
        problem("deploy/Dockerfile", f"line {instruction.start_line}: {instruction.original}: needs a source and a destination")
if instructions:
    users = [i.value[0] for i in last_stage if i.cmd == "USER"]
    image_uid = users[-1].split(":")[0] if users else None
    if not (image_uid or "").isdigit() or image_uid == "0":
        problem("deploy/Dockerfile", f"the image's user is {image_uid!r}, not a numeric non-root uid")
    if not any(i.cmd == "HEALTHCHECK" for i in last_stage):
        problem("deploy/Dockerfile", "the image has no HEALTHCHECK")
    entrypoints = [i for i in last_stage if i.cmd == "ENTRYPOINT"]
    if not (entrypoints and entrypoints[-1].json and entrypoints[-1].value == ("tandem",)):
        problem("deploy/Dockerfile", 'the image\'s ENTRYPOINT is not ["tandem"] (exec form)')
    for name, doc in resources.items():
        if doc.get("kind") == "Deployment":
            uid = (pod_spec(doc).get("securityContext") or {}).get("runAsUser")
            if str(uid) != image_uid:
                problem(f"deploy/kubernetes: {name}", f"runAsUser {uid} is not the image's user {image_uid}")

# Monitoring: the dashboard and the alert rules, and the metrics they use. A metric is known
# when its name, or a histogram's name under its _bucket, _sum or _count series, is written
# whole in one of the crates' metrics.rs files, where every metric tandem reports is named.
dashboard_file = "deploy/grafana/tandem-dashboard.json"
rules_file = "deploy/prometheus/alerts.yml"
metric_sources = ""
metric_files = sorted(glob.glob(os.path.join(target, "crates", "*", "src", "metrics.rs")))
for path in metric_files:
    with open(path, encoding="utf-8") as f:
        metric_sources += f.read() + "\n"
if not metric_files:
    problem("crates/*/src/metrics.rs", "no such file: the metrics tandem reports are unknown")


def check_metrics(where, text):
    if not metric_files:
        return
    for name in sorted(set(re.findall(r"tandem_[a-z_]+", text))):
        names = [name] + [name[: -len(s)] for s in ("_bucket", "_sum", "_count") if name.endswith(s)]
        if not any(re.search(rf"(?<![A-Za-z0-9_]){n}(?![A-Za-z0-9_])", metric_sources) for n in names):
            problem(where, f"unknown metric {name}: no crates/*/src/metrics.rs names {names[-1]}")


def unique_keys(pairs):
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"duplicate key {key!r}")
    return dict(pairs)


dashboard_text = read(dashboard_file)
if dashboard_text is not None:
    try:
        dashboard = json.loads(dashboard_text, object_pairs_hook=unique_keys)
    except ValueError as e:  # json.JSONDecodeError is one
        problem(dashboard_file, f"not JSON: {e}")
        dashboard = None
    if dashboard is not None and not (isinstance(dashboard, dict) and dashboard.get("panels")):
        problem(dashboard_file, "not a Grafana dashboard: no panels")
    check_metrics(dashboard_file, dashboard_text)


# GitHub's anchors of docs/OPERATIONS.md's headings, which the runbooks point at.
def anchor(heading):
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


operations = read("docs/OPERATIONS.md") or ""
anchors = {anchor(heading) for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", operations, re.M)}
rules_text = read(rules_file)
rules_doc = None
if rules_text is not None:
    try:
        rules_doc = yaml.load(rules_text, Loader=Loader)
    except yaml.YAMLError as e:
        problem(rules_file, str(e).replace("\n", " "))
    check_metrics(rules_file, rules_text)
    groups = rules_doc.get("groups") if isinstance(rules_doc, dict) else None
    if not (isinstance(groups, list) and groups):
        problem(rules_file, "no groups: a Prometheus rules file is groups of rules")
    for g, group in enumerate(groups or []):
        rules = group.get("rules") if isinstance(group, dict) else None
        if not (isinstance(group, dict) and group.get("name") and isinstance(rules, list) and rules):
            problem(f"{rules_file}: groups.{g}", "a group needs a name and a list of rules")
            continue
        for r, rule in enumerate(rules):
            alert = rule.get("alert") if isinstance(rule, dict) else None
            where = f"{rules_file}: {group['name']}: {alert or f'rules.{r}'}"
            if not alert:
                problem(where, "not an alerting rule (no alert)")
                continue
            labels = rule.get("labels") if isinstance(rule.get("labels"), dict) else {}
            annotations = rule.get("annotations") if isinstance(rule.get("annotations"), dict) else {}
            for key, value in (
                ("expr", rule.get("expr")),
                ("for", rule.get("for")),
                ("labels.severity", labels.get("severity")),
                ("annotations.summary", annotations.get("summary")),
                ("annotations.runbook", annotations.get("runbook")),
            ):
                if not (isinstance(value, str) and value.strip()):
                    problem(where, f"no {key}")
            duration = rule.get("for")
            if isinstance(duration, str) and not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", duration):
                problem(where, f"for: {duration!r} is not a Prometheus duration")
            runbook = annotations.get("runbook")
            if isinstance(runbook, str) and runbook.strip():
                page, _, fragment = runbook.partition("#")
                if not page.endswith("docs/OPERATIONS.md") or fragment not in anchors:
                    problem(where, f"runbook {runbook} names no heading of docs/OPERATIONS.md")

checked = (
    f"{len(manifests)} Kubernetes manifests (Kubernetes {' and '.join(kubernetes_versions)}, strict),"
    f" docker-compose.yml, deploy/Dockerfile, {dashboard_file} and {rules_file}"
)
if problems:
    print(f"validate-deploy: {len(problems)} problem(s) in {checked}:", file=sys.stderr)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    sys.exit(1)
print(f"validate-deploy: {checked}: valid")
PY
