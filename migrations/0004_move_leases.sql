-- Move leases: the durable claim on an instance while a move, recover(), verify(), a
-- destroy or a create into a cell works on it. It replaces session-level advisory locks,
-- which a transaction-mode connection pooler hands to other clients and which a failover
-- drops without the holder noticing. A lease says who holds it and until when; it needs
-- no connection to stay open. A holder that dies leaves its lease to expire: recover()
-- takes over expired leases only, and a mover whose lease expired cannot commit (the
-- commit point checks it). Only the API database's copy of this table is used; it exists
-- in every database because one migration set serves them all.
-- depends: 0002_roles

CREATE TABLE move_leases (
    instance_uuid uuid        PRIMARY KEY,
    -- The move id (or the id of the recover/verify/destroy/create run) holding it.
    holder        uuid        NOT NULL,
    purpose       text        NOT NULL
                  CHECK (purpose IN ('move', 'recover', 'verify', 'destroy', 'create')),
    -- Host, process and thread of the holder: for operators, never used for decisions.
    owner         text        NOT NULL,
    taken_at      timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);

CREATE INDEX move_leases_holder_idx ON move_leases (holder);
CREATE INDEX move_leases_expires_at_idx ON move_leases (expires_at);

ALTER TABLE move_leases OWNER TO reqspec_migrator;
GRANT SELECT, INSERT, UPDATE, DELETE ON move_leases TO reqspec_app;
