-- Where in the log the event that last wrote each mirror row sits. A SNAPSHOT_END sweeps only
-- rows written before it in the log: when old events are read again (a consumer moved to a new
-- group), rows written by later events are in the mirror already and must stay.
ALTER TABLE consumer_mirror ADD COLUMN log_topic TEXT;
ALTER TABLE consumer_mirror ADD COLUMN log_partition BIGINT;
ALTER TABLE consumer_mirror ADD COLUMN log_offset BIGINT;
