-- Version 6: an application's own channel history settings (issue 15): how many messages
-- each channel keeps and for how many seconds. NULL: the server's --history-size/--history-ttl.
ALTER TABLE applications ADD COLUMN history_size INTEGER;
ALTER TABLE applications ADD COLUMN history_ttl DOUBLE PRECISION;
