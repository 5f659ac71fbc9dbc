//! Accounts and API keys through the embedded Engine: keys authenticate only their account, a revoked key
//! is refused at once, and all of it is rebuilt from the log (the live projection equals a full replay;
//! the end-to-end tests restart the binary).
#![allow(clippy::unwrap_used)]

use buildr_core::AccountId;
use buildr_engine::{Engine, EngineConfig, EngineError};

#[actix_web::test]
async fn keys_authenticate_their_account_and_revocation_is_immediate_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig::new(dir.path());
    let engine = Engine::start(config.clone()).unwrap();
    engine.ready().await.unwrap();

    let (acme, key1) = engine.create_account("Acme").await.unwrap();
    let (bolt, key_b) = engine.create_account("Bolt").await.unwrap();
    assert!(key1.key.starts_with("bk_") && key1.key.len() >= 46);
    assert_eq!(&key1.key[..11], key1.prefix);
    let key2 = engine.create_api_key(&acme.id).await.unwrap();
    assert_eq!(
        engine.authenticate_key(&key1.key).unwrap(),
        Some(acme.id.clone())
    );
    assert_eq!(
        engine.authenticate_key(&key_b.key).unwrap(),
        Some(bolt.id.clone())
    );
    // The right prefix with the wrong rest is not a key.
    let forged = format!("{}{}", key1.prefix, &key2.key[11..]);
    assert_eq!(engine.authenticate_key(&forged).unwrap(), None);
    assert_eq!(engine.authenticate_key("bk_").unwrap(), None);

    // Another account's key prefix is not found under this account.
    assert!(matches!(
        engine.revoke_api_key(&bolt.id, &key1.prefix).await,
        Err(EngineError::NotFound(_))
    ));
    engine.revoke_api_key(&acme.id, &key1.prefix).await.unwrap();
    assert_eq!(engine.authenticate_key(&key1.key).unwrap(), None);
    assert_eq!(
        engine.authenticate_key(&key2.key).unwrap(),
        Some(acme.id.clone())
    );
    assert_eq!(
        engine.account(&acme.id).unwrap().key_prefixes,
        vec![key2.prefix.clone()]
    );
    let names: Vec<String> = engine
        .list_accounts()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names.len(), 3, "acc_default, Acme, Bolt: {names:?}");
    assert!(engine.account(&AccountId::default_account()).is_ok());
    assert!(matches!(
        engine.create_account(" ").await,
        Err(EngineError::Invalid(_))
    ));
    assert!(matches!(
        engine.create_api_key(&"acc_nope".parse().unwrap()).await,
        Err(EngineError::NotFound(_))
    ));
    assert_eq!(
        *engine.projection().unwrap(),
        engine.rebuild_projection().unwrap(),
        "the live projection equals a replay of the log"
    );
}
