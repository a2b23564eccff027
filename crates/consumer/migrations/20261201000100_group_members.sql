-- Members of each consumer group as they see themselves: how many partitions the broker gave
-- each, and when it last said so. A member that holds fewer than its share of the partitions
-- while events wait can tell the broker's coordinator has stranded it (see the consumer's
-- group watchdog), whatever the coordinator itself reports.
CREATE TABLE IF NOT EXISTS consumer_members (
    consumer_group TEXT NOT NULL,
    member TEXT NOT NULL,
    assigned BIGINT NOT NULL,
    seen_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, member)
);
