// Baselines for `kefu bench`, speaking the bare protocol of bench/README.md.
//
//   node relay.js PORT [--db FILE]   the same-contract peer: every message is stored in SQLite
//                                    (WAL, synchronous=FULL) before it is acknowledged; the
//                                    messages that arrive while a commit runs go into the next
//                                    transaction together, as kefu's group commit does.
//   node relay.js PORT --bare        a bare ws relay, no storage (memory per idle connection).
"use strict";

const http = require("http");
const { WebSocketServer } = require("ws");

const args = process.argv.slice(2);
const port = Number(args.find((arg) => /^\d+$/.test(arg)) || process.env.PORT);
const bare = args.includes("--bare");
const dbIndex = args.indexOf("--db");
const dbFile = dbIndex >= 0 ? args[dbIndex + 1] : `node-relay-${process.pid}.db`;
if (!port) {
  console.error("usage: node relay.js PORT [--bare] [--db FILE]");
  process.exit(2);
}

let db = null;
let insert = null;
let findAck = null;
let commitBatch = null;
if (!bare) {
  const Database = require("better-sqlite3");
  for (const suffix of ["", "-wal", "-shm"]) {
    try {
      require("fs").unlinkSync(dbFile + suffix);
    } catch (_) {}
  }
  db = new Database(dbFile);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.exec(`CREATE TABLE messages (
    conversation_id INTEGER NOT NULL, seq INTEGER NOT NULL, sender_kind TEXT NOT NULL, sender_id INTEGER NOT NULL,
    client_id TEXT NOT NULL, text TEXT NOT NULL, created_at INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq), UNIQUE (sender_kind, sender_id, client_id))`);
  insert = db.prepare(
    "INSERT INTO messages (conversation_id, seq, sender_kind, sender_id, client_id, text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
  );
  findAck = db.prepare("SELECT conversation_id, seq FROM messages WHERE sender_kind = ? AND sender_id = ? AND client_id = ?");
  commitBatch = db.transaction((batch) => {
    for (const item of batch) {
      const original = findAck.get(item.senderKind, item.senderId, item.clientId);
      if (original) {
        item.duplicate = true;
        item.seq = original.seq;
        continue;
      }
      const conversation = conversationOf(item.conversationId);
      item.seq = conversation.seq + 1;
      insert.run(item.conversationId, item.seq, item.senderKind, item.senderId, item.clientId, item.text, Date.now());
      conversation.seq = item.seq;
    }
  });
}

let nextId = 0;
const visitors = new Map(); // visitor id (= conversation id) → socket
const agents = []; // [{ id, socket }]
const conversations = new Map(); // id → { agent, seq }
let roundRobin = 0;
let batch = [];
let commitScheduled = false;

function conversationOf(id) {
  let conversation = conversations.get(id);
  if (!conversation) {
    conversation = { agent: null, seq: 0 };
    conversations.set(id, conversation);
  }
  return conversation;
}

function agentSocket(id) {
  const agent = agents.find((candidate) => candidate.id === id);
  return agent ? agent.socket : null;
}

function assign(conversationId) {
  const conversation = conversationOf(conversationId);
  if (conversation.agent === null && agents.length > 0) {
    const agent = agents[roundRobin++ % agents.length];
    conversation.agent = agent.id;
    agent.socket.send(
      JSON.stringify({
        type: "conversation",
        event: "assigned",
        conversation: { id: conversationId, assigned_agent: agent.id, status: "assigned" },
      })
    );
  }
  return conversation;
}

// Acks to the sender and delivers to the other side, after the commit.
function deliver(item) {
  const conversation = assign(item.conversationId);
  if (!item.duplicate && bare) {
    conversation.seq += 1;
    item.seq = conversation.seq;
  }
  item.socket.send(
    JSON.stringify({
      type: "ack",
      client_id: item.clientId,
      conversation_id: item.conversationId,
      seq: item.seq,
      duplicate: !!item.duplicate,
      text: item.text,
    })
  );
  if (item.duplicate) return;
  const message = JSON.stringify({
    type: "message",
    conversation_id: item.conversationId,
    seq: item.seq,
    sender: { kind: item.senderKind, id: item.senderId },
    kind: "text",
    text: item.text,
    client_id: item.clientId,
  });
  const other = item.senderKind === "agent" ? visitors.get(item.conversationId) : agentSocket(conversation.agent);
  if (other) other.send(message);
}

function commit() {
  commitScheduled = false;
  const items = batch;
  batch = [];
  commitBatch(items);
  for (const item of items) deliver(item);
}

function accept(item) {
  if (bare) return deliver(item);
  batch.push(item);
  if (!commitScheduled) {
    commitScheduled = true;
    setImmediate(commit);
  }
}

const server = http.createServer((_, response) => {
  response.writeHead(404);
  response.end();
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 });
wss.on("connection", (socket, request) => {
  const isAgent = request.url.startsWith("/ws/agent");
  let id = null;
  socket.on("message", (data) => {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (id === null) {
      id = ++nextId;
      if (isAgent) agents.push({ id, socket });
      else visitors.set(id, socket);
      const welcome = { type: "welcome", role: isAgent ? "agent" : "visitor", conversations: [] };
      welcome[isAgent ? "agent_id" : "visitor_id"] = id;
      socket.send(JSON.stringify(welcome));
      return;
    }
    if (frame.type === "send") {
      accept({
        socket,
        senderKind: isAgent ? "agent" : "visitor",
        senderId: id,
        conversationId: isAgent ? frame.conversation_id : id,
        clientId: String(frame.client_id),
        text: String(frame.text),
      });
    } else if (frame.type === "ping") {
      socket.send('{"type":"pong"}');
    }
  });
  socket.on("close", () => {
    if (id === null) return;
    if (isAgent) {
      const index = agents.findIndex((agent) => agent.id === id);
      if (index >= 0) agents.splice(index, 1);
    } else {
      visitors.delete(id);
    }
  });
  socket.on("error", () => {});
});
server.listen(port, "127.0.0.1");
