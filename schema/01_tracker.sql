-- Issue tracker in the spirit of Linear: teams, users, membership, projects, issues,
-- comments and labels.

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT,
    created_at INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE team_members (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL DEFAULT 'member'
);
CREATE INDEX team_members_user ON team_members (user_id);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'planned',
    target_date INTEGER
);
CREATE INDEX projects_team ON projects (team_id);

CREATE TABLE issues (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    project_id TEXT REFERENCES projects (id),
    number INTEGER NOT NULL,
    title TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL DEFAULT 'backlog',
    priority INTEGER NOT NULL DEFAULT 0,
    assignee_id TEXT REFERENCES users (id),
    creator_id TEXT REFERENCES users (id),
    estimate REAL,
    created_at INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX issues_team_status ON issues (team_id, status);
CREATE INDEX issues_assignee ON issues (assignee_id);

CREATE TABLE comments (
    id TEXT PRIMARY KEY,
    issue_id TEXT NOT NULL REFERENCES issues (id),
    team_id TEXT NOT NULL REFERENCES teams (id),
    author_id TEXT NOT NULL REFERENCES users (id),
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX comments_issue ON comments (issue_id);

CREATE TABLE labels (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    color TEXT NOT NULL DEFAULT '#888888'
);

CREATE TABLE issue_labels (
    id TEXT PRIMARY KEY,
    issue_id TEXT NOT NULL REFERENCES issues (id),
    label_id TEXT NOT NULL REFERENCES labels (id),
    team_id TEXT NOT NULL REFERENCES teams (id)
);
CREATE INDEX issue_labels_issue ON issue_labels (issue_id);
