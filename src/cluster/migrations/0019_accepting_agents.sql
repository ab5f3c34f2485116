-- Migration 19: whether a present agent takes new conversations through that node (online with a
-- connection open, not in the grace after their last one closed). The node holding a site's
-- routing lease routes to every node's accepting agents.
ALTER TABLE agent_presence ADD COLUMN accepting boolean NOT NULL DEFAULT true;
