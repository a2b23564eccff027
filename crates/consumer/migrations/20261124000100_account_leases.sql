-- Per account, the one worker of a consumer group allowed to apply its events. Partitions can
-- be owned by two members for a moment during a rebalance; the lease keeps an account's cloud
-- calls from two members from interleaving. `owner` names one worker run of one member.
CREATE TABLE IF NOT EXISTS consumer_account_leases (
    consumer_group TEXT NOT NULL,
    account TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, account)
);
