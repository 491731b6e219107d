//! Unit tests of the rules file parser.

use super::*;

fn schema() -> Schema {
    Schema::parse(
        "test",
        "CREATE TABLE issues (id TEXT PRIMARY KEY, team_id TEXT, creator_id TEXT, \
         title TEXT);\n\
         CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT, password_hash TEXT);",
    )
    .unwrap()
}

fn parse(text: &str) -> Result<Rules, RulesError> {
    Rules::parse(&schema(), Path::new("access.rules"), text)
}

fn error_at(text: &str) -> (u64, u64, String) {
    match parse(text) {
        Err(RulesError::Invalid { pos, message, .. }) => (pos.line, pos.column, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn parses_allow_and_hide() {
    let rules = parse(
        "-- issues\n\
         ALLOW READ, WRITE ON issues WHERE team_id IN :auth.teams; -- members\n\
         ALLOW DELETE ON issues WHERE creator_id = :auth.sub;\n\
         ALLOW READ ON users;\n\
         HIDE users.password_hash;",
    )
    .unwrap();
    let issues = &rules.tables["issues"];
    assert_eq!(issues.ops[Op::Read.index()].len(), 1);
    assert_eq!(issues.ops[Op::Delete.index()].len(), 2);
    assert!(issues.ops[Op::Delete.index()]
        .iter()
        .all(|g| g.filter.is_some() && g.columns.is_none() && g.keep.is_empty()));
    let users = &rules.tables["users"];
    assert!(matches!(&users.ops[0][..], [g] if g.filter.is_none()));
    assert!(users.ops[1].is_empty());
    assert_eq!(rules.hidden_columns("users"), vec!["password_hash"]);
    assert!(rules.allows_some("issues", Op::Insert));
    assert!(!rules.allows_some("users", Op::Insert));
    assert!(!rules.allows_some("nothing", Op::Read));
}

#[test]
fn column_lists_and_keep() {
    let rules = parse(
        "ALLOW READ, UPDATE (title, \"team_id\") ON issues KEEP (creator_id) \
         WHERE team_id IN :auth.teams;\n\
         ALLOW INSERT (Title), DELETE ON issues WHERE creator_id = :auth.sub;\n\
         ALLOW UPDATE ON users KEEP (name, name);",
    )
    .unwrap();
    let issues = &rules.tables["issues"];
    let grant = |op: Op| &issues.ops[op.index()][0];
    // Column indexes: id 0, team_id 1, creator_id 2, title 3.
    assert_eq!(grant(Op::Update).columns, Some(vec![1, 3]));
    assert_eq!(grant(Op::Update).keep, vec![2]);
    assert_eq!(grant(Op::Read).columns, None);
    assert!(grant(Op::Read).keep.is_empty());
    assert_eq!(grant(Op::Insert).columns, Some(vec![3]));
    assert!(grant(Op::Insert).keep.is_empty());
    assert!(grant(Op::Delete).keep.is_empty() && grant(Op::Delete).columns.is_none());
    let users = &rules.tables["users"].ops[Op::Update.index()][0];
    assert_eq!((users.columns.clone(), users.keep.clone()), (None, vec![1]));
}

#[test]
fn column_list_errors_point_at_the_token() {
    let (line, column, message) =
        error_at("ALLOW READ ON users;\nALLOW UPDATE (title, nope) ON issues;");
    assert_eq!((line, column), (2, 22), "{message}");
    assert!(message.contains("unknown column `nope`"), "{message}");
    let (_, column, message) = error_at("ALLOW READ (title) ON issues;");
    assert_eq!(column, 12);
    assert!(message.contains("INSERT or UPDATE only"), "{message}");
    let (_, column, message) = error_at("ALLOW WRITE (title) ON issues;");
    assert_eq!(column, 13);
    assert!(message.contains("not WRITE"), "{message}");
    let (_, column, message) = error_at("ALLOW UPDATE () ON issues;");
    assert_eq!(column, 15);
    assert!(message.contains("column name"), "{message}");
    let (_, column, message) = error_at("ALLOW UPDATE (title status) ON issues;");
    assert_eq!(column, 21);
    assert!(message.contains("found `status`"), "{message}");
    let (_, column, message) = error_at("ALLOW UPDATE (title, 'x') ON issues;");
    assert_eq!(column, 22);
    assert!(message.contains("column name"), "{message}");
    let (_, column, message) = error_at("ALLOW UPDATE (title ON issues;");
    assert_eq!(column, 21);
    assert!(message.contains("found `ON`"), "{message}");
    let (line, column, message) =
        error_at("ALLOW UPDATE ON issues\n  KEEP (creator_id, nope)\n  WHERE team_id = 'a';");
    assert_eq!((line, column), (2, 21), "{message}");
    assert!(message.contains("unknown column `nope`"), "{message}");
    let (_, column, message) = error_at("ALLOW READ, DELETE ON issues KEEP (title);");
    assert_eq!(column, 30);
    assert!(message.contains("no UPDATE"), "{message}");
    let (_, column, message) = error_at("ALLOW UPDATE ON issues KEEP title;");
    assert_eq!(column, 29);
    assert!(message.contains("expected `(`"), "{message}");
    let (_, column, message) = error_at("ALLOW UPDATE ON issues KEEP;");
    assert_eq!(column, 28);
    assert!(message.contains("expected `(`"), "{message}");
    let (_, column, message) = error_at("ALLOW UPDATE ON issues KEPT (title);");
    assert_eq!(column, 24);
    assert!(message.contains("expected KEEP, WHERE or `;`"), "{message}");
    let (_, column, message) = error_at("ALLOW UPDATE ON issues KEEP (title) x;");
    assert_eq!(column, 37);
    assert!(message.contains("expected WHERE or `;`"), "{message}");
    // The predicate after a column list and KEEP still maps into the file.
    let (line, column, message) = error_at(
        "ALLOW UPDATE (title) ON issues KEEP (team_id) WHERE\n  team_id = 'a' AND bad = 1;",
    );
    assert_eq!((line, column), (2, 21), "{message}");
}

#[test]
fn semicolons_in_strings_and_comments_do_not_split() {
    let rules =
        parse("ALLOW READ ON issues WHERE title = 'a;b' -- not; the end\n  OR team_id = 'x';")
            .unwrap();
    assert!(!rules.tables["issues"].ops[0].is_empty());
}

#[test]
fn errors_point_into_the_file() {
    let (line, column, message) = error_at("\nALLOW READ ON issues WHERE nope = 1;");
    assert_eq!((line, column), (2, 28), "{message}");
    assert!(message.contains("unknown column `nope`"), "{message}");
    let (line, column, _) = error_at("ALLOW READ ON issues WHERE\n  team_id = 'a' AND\n  bad = 1;");
    assert_eq!((line, column), (3, 3));
    let (line, column, message) = error_at("ALLOW READ ON issues WHERE team_id = :team;");
    assert_eq!((line, column), (1, 38), "{message}");
    assert!(message.contains(":team"), "{message}");
    let (_, column, message) = error_at("ALLOW READ ON nope;");
    assert_eq!(column, 15);
    assert!(message.contains("unknown table"), "{message}");
    let (_, column, message) = error_at("ALLOW LOOK ON issues;");
    assert_eq!(column, 7);
    assert!(message.contains("LOOK"), "{message}");
    let (_, column, message) = error_at("HIDE users.id;");
    assert_eq!(column, 12);
    assert!(message.contains("primary key"), "{message}");
    let (_, column, _) = error_at("HIDE users.nope;");
    assert_eq!(column, 12);
    let (_, _, message) = error_at("GRANT READ ON users;");
    assert!(message.contains("ALLOW or HIDE"), "{message}");
    let (_, _, message) =
        error_at("ALLOW READ ON issues WHERE team_id IN :auth.t OR creator_id = :auth.t;");
    assert!(message.contains("both as a list"), "{message}");
    let (_, _, message) = error_at("ALLOW READ ON issues WHERE 1 = 1;");
    assert!(message.contains("constant"), "{message}");
}

#[test]
fn quoted_names_comments_and_tokenizer_errors() {
    let rules = parse(
        "ALLOW READ ON \"issues\" -- the table\n WHERE\n  title = 'a''; --' ;\n\
         HIDE \"users\".password_hash, users.\"name\";",
    )
    .unwrap();
    assert!(!rules.tables["issues"].ops[0].is_empty());
    assert_eq!(rules.hidden_columns("users"), vec!["name", "password_hash"]);
    let (line, column, message) = error_at("ALLOW READ ON issues WHERE\n  title = 'open;");
    assert_eq!((line, column), (2, 11), "{message}");
    let (line, column, message) = error_at("ALLOW READ ON \"nope\" WHERE\n\tnope = 1;");
    assert_eq!((line, column), (1, 15), "{message}");
    let (_, column, message) = error_at("ALLOW READ ON issues x;");
    assert_eq!(column, 22);
    assert!(message.contains("found `x`"), "{message}");
    let (_, column, message) = error_at("ALLOW READ ON issues\t\tWHERE nope = 1;");
    assert_eq!(column, 29, "{message}");
}

#[test]
fn error_display_names_the_file() {
    let e = parse("ALLOW READ ON nope;").unwrap_err();
    assert_eq!(e.to_string(), "access.rules:1:15: unknown table `nope`");
}
