//! End-to-end keyset pagination through the sqlx `Any` driver: against an in-memory SQLite,
//! or, when `TOUCHSTONE_TEST_PG_URL` is set, against PostgreSQL (a temporary table, so
//! nothing outlives the test's connection).

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{AssertSqlSafe, Row as _};
use touchstone_list::{Field, FieldType, ListParams, ListQuery, Schema};

const KINDS: &[(&str, i64)] = &[("PERSON", 1), ("ORGANISATION", 2), ("AGENCY", 3)];

static SCHEMA: Schema = Schema {
    fields: &[
        Field {
            name: "create_time",
            column: "create_time",
            ty: FieldType::Timestamp,
            sortable: true,
            nullable: false,
        },
        Field {
            name: "priority",
            column: "priority",
            ty: FieldType::Integer,
            sortable: true,
            nullable: true,
        },
        Field {
            name: "title",
            column: "title",
            ty: FieldType::Text,
            sortable: true,
            nullable: true,
        },
        Field {
            name: "kind",
            column: "kind",
            ty: FieldType::Enum(KINDS),
            sortable: true,
            nullable: false,
        },
        Field {
            name: "active",
            column: "active",
            ty: FieldType::Bool,
            sortable: true,
            nullable: false,
        },
        Field {
            name: "urgent",
            column: "urgent",
            ty: FieldType::Bool,
            sortable: true,
            nullable: true,
        },
        Field {
            name: "due_date",
            column: "due_date",
            ty: FieldType::Date,
            sortable: true,
            nullable: true,
        },
    ],
    id_column: "id",
    default_order: "create_time desc",
};

const ROWS: i64 = 137;
const BASE_MS: i64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
struct Item {
    id: String,
    tenant: &'static str,
    create_time: i64,
    priority: Option<i64>,
    title: Option<&'static str>,
    kind: i64,
    active: bool,
    urgent: Option<bool>,
    due_date: Option<i64>,
}

fn items() -> Vec<Item> {
    (0..ROWS)
        .map(|i| Item {
            // Ids in a different order from insertion so the tie-breaker does real work.
            id: format!("0190{:06}", (i * 7919) % 100_003),
            tenant: if i % 11 == 3 { "other" } else { "dia" },
            // Only 13 distinct times: lots of ties.
            create_time: BASE_MS + (i % 13) * 1000,
            priority: (i % 5 != 0).then_some(i % 4),
            title: (i % 7 != 0).then(|| ["alpha", "beta", "gamma"][(i % 3) as usize]),
            kind: 1 + i % 3,
            active: i % 2 == 0,
            urgent: (i % 3 != 0).then_some(i % 4 < 2),
            due_date: (i % 6 != 0).then(|| 20260101 + i % 28),
        })
        .collect()
}

fn postgres_url() -> Option<String> {
    std::env::var("TOUCHSTONE_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

async fn pool() -> AnyPool {
    sqlx::any::install_default_drivers();
    let pg = postgres_url();
    // One connection, so the temporary table (PostgreSQL) or the in-memory database
    // (SQLite) is the same for every query of the test.
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(pg.as_deref().unwrap_or("sqlite::memory:"))
        .await
        .expect("connect (TOUCHSTONE_TEST_PG_URL set but PostgreSQL unreachable?)");
    // Booleans are INTEGER on SQLite: the Any driver cannot map SQLite's BOOLEAN affinity type
    // when the value is NULL. PostgreSQL has a real BOOLEAN.
    let (temp, boolean) = if pg.is_some() {
        ("TEMPORARY ", "BOOLEAN")
    } else {
        ("", "INTEGER")
    };
    let ddl = format!(
        "CREATE {temp}TABLE items (
            id TEXT PRIMARY KEY NOT NULL,
            tenant TEXT NOT NULL,
            create_time BIGINT NOT NULL,
            priority BIGINT,
            title TEXT,
            kind BIGINT NOT NULL,
            active {boolean} NOT NULL,
            urgent {boolean},
            due_date BIGINT
        )"
    );
    sqlx::query(AssertSqlSafe(ddl))
        .execute(&pool)
        .await
        .expect("create");
    for it in items() {
        sqlx::query("INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(it.id)
            .bind(it.tenant)
            .bind(it.create_time)
            .bind(it.priority)
            .bind(it.title)
            .bind(it.kind)
            .bind(it.active)
            .bind(it.urgent)
            .bind(it.due_date)
            .execute(&pool)
            .await
            .expect("insert");
    }
    pool
}

const SELECT: &str =
    "SELECT id, create_time, priority, title, kind, active, urgent, due_date FROM items";

/// Pages through the tenant's items; page sizes cycle through `sizes`. Returns the ids in
/// page order and the number of pages.
async fn page_through(
    pool: &AnyPool,
    filter: &str,
    order_by: &str,
    sizes: &[i32],
) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let size = sizes[pages % sizes.len()];
        let params = ListParams {
            filter,
            order_by,
            page_size: size,
            page_token: &token,
        };
        let q = ListQuery::plan(&SCHEMA, "agencies/dia/items", &params, 2)
            .unwrap_or_else(|e| panic!("{filter} / {order_by}: {e}"));
        let limit_param = 2 + q.params().len();
        let sql = format!(
            "{SELECT} WHERE tenant = $1 AND {} ORDER BY {} LIMIT ${limit_param}",
            q.where_sql(),
            q.order_sql()
        );
        let query = q
            .bind(sqlx::query(AssertSqlSafe(sql.clone())).bind("dia"))
            .bind(q.fetch_limit());
        let mut rows = query
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(rows.len() as i64 <= q.fetch_limit());
        token = q.finish(&mut rows).expect("finish");
        assert!(rows.len() <= q.page_size());
        pages += 1;
        if !token.is_empty() {
            assert_eq!(rows.len(), q.page_size(), "only the last page may be short");
        }
        ids.extend(rows.iter().map(|r| r.get::<String, _>("id")));
        if token.is_empty() {
            return (ids, pages);
        }
        assert!(pages < 1000, "pagination does not terminate");
    }
}

async fn all_at_once(pool: &AnyPool, filter: &str, order_by: &str) -> Vec<String> {
    let params = ListParams {
        filter,
        order_by,
        page_size: 0,
        page_token: "",
    };
    let q = ListQuery::plan(&SCHEMA, "agencies/dia/items", &params, 2).expect("plan");
    let sql = format!(
        "SELECT id FROM items WHERE tenant = $1 AND {} ORDER BY {}",
        q.where_sql(),
        q.order_sql()
    );
    q.bind(sqlx::query(AssertSqlSafe(sql)).bind("dia"))
        .fetch_all(pool)
        .await
        .expect("fetch all")
        .iter()
        .map(|r| r.get::<String, _>("id"))
        .collect()
}

const FILTERS: &[&str] = &[
    "",
    "kind = PERSON",
    "priority != 2",
    "NOT (kind = person OR active = true)",
    r#"create_time >= "2023-11-14T22:13:25Z" title != "beta""#,
    "due_date < 2026-01-15 OR priority = 3 AND -urgent = false",
    "title < \"beta\" OR title = \"gamma\"",
];

const ORDERS: &[&str] = &[
    "",
    "create_time",
    "priority desc, title",
    "title desc, create_time desc",
    "urgent, kind desc",
    "active desc, due_date",
    "due_date desc, urgent desc, priority",
];

#[tokio::test]
async fn pages_concatenate_to_the_single_query_result() {
    let pool = pool().await;
    let mut checked = 0;
    for filter in FILTERS {
        for order_by in ORDERS {
            let expected = all_at_once(&pool, filter, order_by).await;
            let (got, pages) = page_through(&pool, filter, order_by, &[10]).await;
            assert_eq!(got, expected, "filter {filter:?} order_by {order_by:?}");
            assert_eq!(pages, expected.len().div_ceil(10).max(1));
            checked += expected.len();
        }
    }
    assert!(checked > 1000, "filters should select plenty of rows");
}

#[tokio::test]
async fn page_size_may_change_between_pages() {
    let pool = pool().await;
    for order_by in ORDERS {
        let expected = all_at_once(&pool, "", order_by).await;
        let (got, _) = page_through(&pool, "", order_by, &[10, 3, 1, 25]).await;
        assert_eq!(got, expected, "order_by {order_by:?}");
    }
}

#[tokio::test]
async fn filters_select_the_right_rows() {
    let pool = pool().await;
    let mine: Vec<Item> = items().into_iter().filter(|i| i.tenant == "dia").collect();
    let count = |pred: &dyn Fn(&Item) -> bool| mine.iter().filter(|i| pred(i)).count();
    let cases: [(&str, usize); 7] = [
        ("", mine.len()),
        ("kind = PERSON", count(&|i| i.kind == 1)),
        // != also matches NULL; its negation does not.
        ("priority != 2", count(&|i| i.priority != Some(2))),
        ("NOT priority != 2", count(&|i| i.priority == Some(2))),
        (
            "-priority < 2",
            count(&|i| i.priority.is_none_or(|p| p >= 2)),
        ),
        (
            "NOT (kind = person OR active = true)",
            count(&|i| i.kind != 1 && !i.active),
        ),
        (
            "due_date < 2026-01-15 OR priority = 3 AND -urgent = false",
            count(&|i| {
                (i.due_date.is_some_and(|d| d < 20260115) || i.priority == Some(3))
                    && i.urgent != Some(false)
            }),
        ),
    ];
    for (filter, n) in cases {
        let (got, _) = page_through(&pool, filter, "", &[10]).await;
        assert_eq!(got.len(), n, "filter {filter:?}");
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "filter {filter:?} repeated a row");
    }
    let threshold = BASE_MS + 5000;
    let ts = time::OffsetDateTime::from_unix_timestamp(threshold / 1000)
        .expect("ts")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("fmt");
    let (got, _) = page_through(&pool, &format!("create_time > \"{ts}\""), "", &[10]).await;
    assert_eq!(got.len(), count(&|i| i.create_time > threshold));
}

#[tokio::test]
async fn token_from_another_query_is_rejected() {
    let pool = pool().await;
    let params = ListParams {
        filter: "kind = PERSON",
        order_by: "title",
        page_size: 5,
        page_token: "",
    };
    let q = ListQuery::plan(&SCHEMA, "agencies/dia/items", &params, 2).expect("plan");
    let sql = format!(
        "{SELECT} WHERE tenant = $1 AND {} ORDER BY {} LIMIT {}",
        q.where_sql(),
        q.order_sql(),
        q.fetch_limit()
    );
    let mut rows = q
        .bind(sqlx::query(AssertSqlSafe(sql)).bind("dia"))
        .fetch_all(&pool)
        .await
        .expect("fetch");
    let token = q.finish(&mut rows).expect("finish");
    assert_eq!(rows.len(), 5);
    assert!(!token.is_empty());

    let same = ListParams {
        filter: " kind=PERSON ",
        page_size: 50,
        page_token: &token,
        ..params
    };
    assert!(ListQuery::plan(&SCHEMA, "agencies/dia/items", &same, 2).is_ok());
    for (scope, p) in [
        ("agencies/other/items", same),
        (
            "agencies/dia/items",
            ListParams {
                filter: "kind = AGENCY",
                ..same
            },
        ),
        (
            "agencies/dia/items",
            ListParams {
                order_by: "title desc",
                ..same
            },
        ),
    ] {
        let e = ListQuery::plan(&SCHEMA, scope, &p, 2).expect_err("mismatch");
        assert_eq!(e.field, "page_token");
    }
}

#[test]
fn schema_is_valid() {
    assert_eq!(SCHEMA.validate(), Ok(()));
}

static QUALIFIED: Schema = Schema {
    fields: &[
        Field {
            name: "title",
            column: "i.title",
            ty: FieldType::Text,
            sortable: true,
            nullable: true,
        },
        Field {
            name: "priority",
            column: "i.priority",
            ty: FieldType::Integer,
            sortable: true,
            // Deliberately wrong: the data has NULL priorities.
            nullable: false,
        },
    ],
    id_column: "i.id",
    default_order: "title desc",
};

async fn first_page(pool: &AnyPool, order_by: &str) -> Result<String, sqlx::Error> {
    let params = ListParams {
        filter: "title != \"beta\"",
        order_by,
        page_size: 10,
        page_token: "",
    };
    let q = ListQuery::plan(&QUALIFIED, "s", &params, 1).expect("plan");
    assert_eq!(
        q.sort_columns().collect::<Vec<_>>(),
        if order_by.is_empty() {
            ["title", "id"]
        } else {
            ["priority", "id"]
        }
    );
    let sql = format!(
        "SELECT i.id, i.title, i.priority FROM items i WHERE {} ORDER BY {} LIMIT {}",
        q.where_sql(),
        q.order_sql(),
        q.fetch_limit()
    );
    let mut rows = q
        .bind(sqlx::query(AssertSqlSafe(sql)))
        .fetch_all(pool)
        .await?;
    q.finish(&mut rows)
}

#[tokio::test]
async fn qualified_columns_and_null_in_non_nullable_key() {
    let pool = pool().await;
    assert!(!first_page(&pool, "").await.expect("page").is_empty());
    // SQLite sorts NULLs first ascending (PostgreSQL: first descending), so the last row of
    // the first page has a NULL priority; without COALESCE that key would break the keyset
    // condition, so finish refuses it rather than hand out a token that loses rows.
    let order = if postgres_url().is_some() {
        "priority desc"
    } else {
        "priority asc"
    };
    let err = first_page(&pool, order)
        .await
        .map(|_| ())
        .map_or_else(|e| e.to_string(), |()| String::new());
    assert!(err.contains("non-nullable"), "{err}");
}
