-- Per-transaction settings (no table).

-- name: relax_commit_durability :exec
-- For move cleanup steps whose loss in a server crash recover() redoes from durable
-- state (see docs/devref.md, "Moves"): the commit does not wait for the WAL flush.
SET LOCAL synchronous_commit = off;

-- name: set_transaction_timeouts :exec
-- Behind a transaction-mode pooler (setting pooler = "transaction"): the session's
-- timeouts, local to the current transaction, pipelined before each statement.
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true),
       set_config('idle_in_transaction_session_timeout', %(idle_in_transaction_session_timeout)s, true);

-- name: set_session_timeouts :exec
-- Behind a session-mode pooler (pooler = "session"): once per connection, for its session
-- (the pooler's reset query, DISCARD ALL, drops them when the client lets go).
SELECT set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('lock_timeout', %(lock_timeout)s, false),
       set_config('idle_in_transaction_session_timeout', %(idle_in_transaction_session_timeout)s, false);

-- name: ping :exec
-- One round trip and nothing else: tests that an idle pooled connection still works.
SELECT 1;
