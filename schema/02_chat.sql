-- A chat: rooms and their messages.

CREATE TABLE rooms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    topic TEXT,
    is_private INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms (id),
    author_id TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    edited_at INTEGER
);
CREATE INDEX messages_room_sent ON messages (room_id, sent_at);
