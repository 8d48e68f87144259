use std::fs;
use std::path::Path;

use super::*;

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("folder");
    }
    fs::write(path, text).expect("write");
}

/// A project `shop` with a table in its default schema, one in `EDW`, and a view over both.
fn shop(root: &Path) {
    write(
        &root.join("shop/orders.csv"),
        "id,day,amount\n1,2024-01-02,1.5\n",
    );
    write(
        &root.join("shop/EDW.schema/CAL.csv"),
        "day,week\n2024-01-02,1\n",
    );
    write(
        &root.join("shop/weekly.sql"),
        "select week, sum(amount) as total from orders o join edw.cal c on o.day = c.day group by week",
    );
    write(&root.join("shop/notes.txt"), "not a table");
}

#[test]
fn a_snapshot_has_every_schema_its_tables_columns_and_its_views_columns() {
    let root = tempfile::tempdir().expect("tmp");
    shop(root.path());
    let snapshot = open(root.path(), "SHOP").expect("opens");
    assert_eq!(snapshot.project, "shop");
    assert_eq!(snapshot.default_schema, "SHOP");
    let described: Vec<(String, &str, bool)> = snapshot
        .described
        .iter()
        .map(|t| {
            (
                t.schema.clone().unwrap_or_default(),
                t.name.as_str(),
                t.view,
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("EDW".to_owned(), "CAL", false),
            ("SHOP".to_owned(), "orders", false),
            ("SHOP".to_owned(), "weekly", true),
        ]
    );
    let orders = snapshot.table("SHOP", "orders").expect("orders");
    let types: Vec<String> = orders.columns.iter().map(|c| c.ty.to_string()).collect();
    assert_eq!(types, ["BIGINT", "VARCHAR", "DOUBLE"]);
    assert!(matches!(orders.source, Source::Csv(_)));
    let weekly = &snapshot.described[2];
    let columns: Vec<&str> = weekly.columns.iter().map(|c| c.name.as_str()).collect();
    // A column keeps the catalog's spelling; an unquoted alias is upper-cased (Calcite).
    assert_eq!(columns, ["week", "TOTAL"]);
    // The planner binds against the same snapshot: a table of another schema by its name.
    spool_planner::bind_query("select * from \"EDW\".cal", &snapshot.catalog).expect("binds");
}

#[test]
fn project_toml_names_the_engine_and_the_default_schema_and_bad_files_say_what_is_wrong() {
    let root = tempfile::tempdir().expect("tmp");
    shop(root.path());
    assert_eq!(
        settings(root.path(), "shop").expect("defaults"),
        Settings::default()
    );
    write(
        &root.path().join("shop/project.toml"),
        "engine = \"Spark\"\ndefault_schema = \"RETAIL\"\n",
    );
    let snapshot = open(root.path(), "shop").expect("opens");
    assert_eq!(snapshot.settings.engine, EngineKind::Spark);
    assert_eq!(snapshot.default_schema, "RETAIL");
    assert_eq!(snapshot.described[1].schema.as_deref(), Some("RETAIL"));

    for (text, expected) in [
        ("engin = 1\n", "project.toml of project 'shop' is invalid"),
        ("engine = \"duck\"\n", "names engine \"duck\""),
        ("default_schema = \" \"\n", "default_schema is empty"),
    ] {
        write(&root.path().join("shop/project.toml"), text);
        let Err(CatalogError::Broken(message)) = settings(root.path(), "shop") else {
            panic!("{text} is refused");
        };
        assert!(message.contains(expected), "{message}");
        let Err(CatalogError::Broken(message)) = open(root.path(), "shop") else {
            panic!("{text} is refused on open");
        };
        assert!(message.contains(expected), "{message}");
    }
    assert_eq!(settings(root.path(), "nope"), Err(CatalogError::NotFound));
}

#[test]
fn a_broken_view_is_named_and_a_missing_project_is_not_found() {
    let root = tempfile::tempdir().expect("tmp");
    shop(root.path());
    write(&root.path().join("shop/bad.sql"), "select nope from orders");
    let Err(CatalogError::Broken(message)) = open(root.path(), "shop") else {
        panic!("a broken view breaks the project");
    };
    assert!(
        message.contains("view 'bad' of project 'shop' is invalid"),
        "{message}"
    );
    assert!(matches!(
        open(root.path(), "other"),
        Err(CatalogError::NotFound)
    ));
}

#[test]
fn the_cache_keeps_a_snapshot_until_a_file_changes() {
    let root = tempfile::tempdir().expect("tmp");
    shop(root.path());
    let cache: Cache<Arc<Snapshot>> = Cache::default();
    let builds = std::cell::Cell::new(0);
    let open = || {
        cache
            .open(root.path(), "shop", |s| {
                builds.set(builds.get() + 1);
                Ok(s)
            })
            .expect("opens")
    };
    let first = open();
    let again = open();
    assert_eq!(builds.get(), 1);
    assert!(Arc::ptr_eq(&first, &again));
    // A new table is a new version: the next query sees it.
    write(&root.path().join("shop/EDW.schema/more.csv"), "x\n1\n");
    let changed = open();
    assert_eq!(builds.get(), 2);
    assert!(changed.table("EDW", "more").is_some());
    assert_ne!(first.version, changed.version);
}

#[test]
fn projects_are_the_folders_with_project_names() {
    let root = tempfile::tempdir().expect("tmp");
    shop(root.path());
    fs::create_dir_all(root.path().join("b-2")).expect("dir");
    fs::create_dir_all(root.path().join("not a project")).expect("dir");
    write(&root.path().join("file.csv"), "x\n");
    assert_eq!(projects(root.path()).expect("lists"), ["b-2", "shop"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_folder_catalog_answers_the_metadata_calls_and_versions() {
    use spool_ports::ProjectCatalog;
    let root = tempfile::tempdir().expect("tmp");
    shop(root.path());
    let catalog = FolderCatalog::new(root.path());
    assert_eq!(catalog.projects().await.expect("lists"), ["shop"]);
    let shop = spool_domain::ProjectName::parse("SHOP").expect("name");
    let tables = catalog.describe(&shop).await.expect("describes");
    assert_eq!(tables.len(), 3);
    let before = catalog.source_version(&shop).await.expect("version");
    write(
        &root.path().join("shop/orders.csv"),
        "id,day,amount\n1,2024-01-02,1.5\n2,2024-01-03,2\n",
    );
    let after = catalog.source_version(&shop).await.expect("version");
    assert!(before.is_some() && before != after);
    let nope = spool_domain::ProjectName::parse("nope").expect("name");
    assert!(matches!(
        catalog.describe(&nope).await,
        Err(EngineError::ProjectNotFound(p)) if p == nope
    ));
    assert_eq!(catalog.source_version(&nope).await.expect("no error"), None);
}
