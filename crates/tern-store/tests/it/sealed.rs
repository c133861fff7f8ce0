//! Rewriting every sealed value at once (what key rotation does), all or nothing.

use tern_store::connections::StoredConnection;
use tern_store::Store;

pub async fn resealing_rewrites_every_sealed_value_or_none(store: Store) {
    let now = chrono::Utc::now();
    for (name, secret) in [("a", "sealed-a"), ("b", "sealed-b")] {
        let c = StoredConnection {
            name: name.into(),
            conn_type: "postgres".into(),
            host: "h".into(),
            login: "l".into(),
            secret: secret.into(),
            description: String::new(),
            created_at: now,
            updated_at: now,
        };
        store.put_connection(&c, false).await.unwrap();
    }
    store
        .put_variable("key", "sealed-v", true, "")
        .await
        .unwrap();
    store
        .put_variable("plain", "in clear", false, "")
        .await
        .unwrap();

    // One value that cannot be opened: nothing changes, the error names it.
    let e = store
        .reseal_all(|v| {
            if v == "sealed-b" {
                Err("cannot open".into())
            } else {
                Ok(format!("new({v})"))
            }
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("connection \"b\""), "{e}");
    assert_eq!(
        store.find_connection("a").await.unwrap().unwrap().secret,
        "sealed-a"
    );
    assert_eq!(
        store.variable("key").await.unwrap().unwrap().value,
        "sealed-v"
    );

    let done = store.reseal_all(|v| Ok(format!("new({v})"))).await.unwrap();
    assert_eq!((done.connections, done.variables), (2, 1));
    assert_eq!(
        store.find_connection("b").await.unwrap().unwrap().secret,
        "new(sealed-b)"
    );
    assert_eq!(
        store.variable("key").await.unwrap().unwrap().value,
        "new(sealed-v)"
    );
    assert_eq!(
        store.variable("plain").await.unwrap().unwrap().value,
        "in clear"
    );
}
