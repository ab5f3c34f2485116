-- Migration 6: agents' presence across nodes. A node that holds an agent's connections keeps a
-- row for it, renewed by the node's heartbeat; a node that dies stops renewing, and its rows
-- stop counting when they expire (database clock, Unix milliseconds). An agent is online for a
-- site while any node's unexpired row says so.
CREATE TABLE agent_presence (
    site text NOT NULL,
    agent_id bigint NOT NULL,
    node text NOT NULL,
    -- The agent's connections on that node (several tabs, a phone).
    connections integer NOT NULL CHECK (connections > 0),
    status text NOT NULL CHECK (status IN ('online', 'away')),
    expires_at bigint NOT NULL,
    PRIMARY KEY (site, agent_id, node)
);
-- A node's heartbeat renews its rows; the sweep removes expired ones.
CREATE INDEX agent_presence_node ON agent_presence (node);
CREATE INDEX agent_presence_expiry ON agent_presence (expires_at);
