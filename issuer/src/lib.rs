//! `civis-issuer`: the agency issuer service.
//!
//! Operators enroll residents, personalize citizen cards at a counter (the card's commands are
//! relayed; the batch transport key never leaves the service), mint credentials for wallets,
//! and suspend or revoke. Every change is recorded with its audit entry in one database
//! transaction (SQLite or PostgreSQL through sqlx), every request that creates something is
//! idempotent per request key, and status changes reach the registry chain in batches through
//! an outbox that survives crashes.
//!
//! - [`config`]: the TOML file; [`init`] writes a first one.
//! - [`api`]: routes, authentication, scopes, limits; [`router`] and [`serve`].
//! - [`perso`]: the personalization state machine.
//! - [`mint`]: credentials and status indexes. [`enroll`]: attribute rules.
//! - [`status`] and [`anchor`]: status changes and their way to the chain.
//! - [`store`]: the database. [`client`]: the HTTP client the CLI uses.
#![forbid(unsafe_code)]

pub mod agency;
pub mod anchor;
pub mod api;
pub mod client;
pub mod config;
pub mod enroll;
pub mod error;
pub mod hsm;
pub mod mint;
pub mod perso;
pub mod renew;
pub mod rotate;
pub mod service;
pub mod status;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use api::router;
pub use config::Config;
pub use error::{Error, Result};
pub use service::Service;

use civis_core::crypto::SoftwareKey;
use civis_core::did::{DidDocument, KeyCommitment};
use civis_registry_client::keyfile;

/// Run the service until `stop` fires (or Ctrl-C): the HTTP API and the anchoring worker.
pub async fn serve(config: Config, stop: Arc<tokio::sync::Notify>) -> Result<()> {
    let listen = config.listen;
    let svc = Arc::new(Service::open(config).await?);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    run_service(svc, listener, stop).await
}

/// Run an opened service on a bound listener until `stop` fires (or Ctrl-C).
pub async fn run_service(
    svc: Arc<Service>,
    listener: tokio::net::TcpListener,
    stop: Arc<tokio::sync::Notify>,
) -> Result<()> {
    let client = svc.registry()?;
    let listen = listener.local_addr()?;
    tracing::info!(%listen, agencies = svc.agencies.len(), "issuer listening");
    let worker = tokio::spawn(anchor::run(Arc::clone(&svc), client, Arc::clone(&stop)));
    let app = router(Arc::clone(&svc));
    let shutdown = {
        let stop = Arc::clone(&stop);
        async move {
            tokio::select! {
                () = stop.notified() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    };
    // Connection caps in all and per address, a request-head deadline and an idle timeout: a
    // stranger holding connections open cannot take the service down.
    let served = civis_http_serve::serve(
        listener,
        app,
        civis_http_serve::ServeLimits::for_this_process(),
        shutdown,
    )
    .await;
    stop.notify_waiters();
    worker.abort();
    svc.store.close().await;
    served.map_err(Error::Io)
}

/// What [`init`] needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Folder to write into (created).
    pub dir: PathBuf,
    /// Agency id.
    pub agency: String,
    /// Agency name (`issuing_authority`).
    pub name: String,
    /// City.
    pub city: String,
    /// Districts.
    pub districts: Vec<String>,
    /// Registry URLs.
    pub registry: Vec<String>,
    /// The registry's genesis.json.
    pub genesis: PathBuf,
    /// `sqlite:…` or `postgres://…`; default `sqlite:issuer.db` in `dir`.
    pub database: Option<String>,
    /// Listen address.
    pub listen: std::net::SocketAddr,
    /// A first card batch: id and its transport key.
    pub batch: Option<(String, [u8; 32])>,
    /// Generate the agency's key on a PKCS#11 token instead of a key file.
    pub pkcs11: Option<config::Pkcs11Config>,
}

/// What [`init`] wrote.
#[derive(Debug, Clone)]
pub struct Initialized {
    /// The config file.
    pub config: PathBuf,
    /// The agency's issuer DID.
    pub did: String,
    /// The first operator token (every scope), also written to `operator.token` (0600).
    pub token: String,
}

/// Write a config, the agency's key and next key, a batch key file, and a first operator token
/// with every scope: from nothing to a running issuer.
pub async fn init(
    opts: &InitOptions,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<Initialized> {
    let dir = &opts.dir;
    std::fs::create_dir_all(dir)?;
    let config_path = dir.join("issuer.toml");
    if config_path.exists() {
        return Err(Error::Config(format!(
            "{} exists; refusing to overwrite",
            config_path.display()
        )));
    }
    let (key_lines, doc) = match &opts.pkcs11 {
        None => {
            let key = SoftwareKey::generate(rng);
            let next = SoftwareKey::generate(rng);
            let doc =
                DidDocument::inception(key.public_key(), &KeyCommitment::to(next.public_key()));
            let key_path = dir.join("agency.jwk");
            keyfile::write_key(&key_path, &key, Some(doc.id.key_url(1).to_string()))
                .map_err(keyfile_err(&key_path))?;
            let next_path = dir.join("agency.next.jwk");
            keyfile::write_key(&next_path, &next, None).map_err(keyfile_err(&next_path))?;
            (
                "key = \"agency.jwk\"\nnext_key = \"agency.next.jwk\"\n".to_owned(),
                doc,
            )
        }
        Some(h) => {
            // Both keys generated on the token, never extractable: `label#1` signs, `label#2`
            // is the committed next key.
            let (public, next) = hsm::generate_first(&h.module, &h.token, &h.pin()?, &h.label)?;
            let doc = DidDocument::inception(&public, &KeyCommitment::to(&next));
            let lines = format!(
                "[agency.pkcs11]\nmodule = {:?}\ntoken = {:?}\npin_file = {:?}\nlabel = {:?}\nkid = {:?}\n",
                h.module.display().to_string(),
                h.token,
                h.pin_file.display().to_string(),
                h.label,
                doc.id.key_url(1).to_string(),
            );
            (lines, doc)
        }
    };
    let mut batches = String::new();
    if let Some((id, tk)) = &opts.batch {
        // Named relative to the config's folder, so the folder can move as a whole.
        let name = format!("batch-{id}.key");
        let path = dir.join(&name);
        keyfile::write_secret(&path, hex::encode(tk).as_bytes()).map_err(keyfile_err(&path))?;
        batches = format!("\n[agency.batches]\n{} = {name:?}\n", toml_key(id));
    }
    let database = opts
        .database
        .clone()
        .unwrap_or_else(|| "sqlite:issuer.db".to_owned());
    let text = format!(
        "# Civis issuer service (specs/issuer-api.md § Configuration).\n\
         listen = {listen:?}\n\
         database = {database:?}\n\
         registry = {registry:?}\n\
         genesis = {genesis:?}\n\
         \n\
         [[agency]]\n\
         id = {id:?}\n\
         name = {name:?}\n\
         city = {city:?}\n\
         districts = {districts:?}\n\
         status_list = \"citizen-1\"\n\
         {key_lines}{batches}",
        listen = opts.listen.to_string(),
        registry = opts.registry,
        genesis = opts.genesis.display().to_string(),
        id = opts.agency,
        name = opts.name,
        city = opts.city,
        districts = opts.districts,
    );
    let mut config: Config = toml::from_str(&text).map_err(|e| Error::Config(e.to_string()))?;
    config.resolve(dir);
    config.check()?;
    keyfile::write_public(&config_path, text.as_bytes()).map_err(keyfile_err(&config_path))?;
    let store = store::Store::connect(&config.database).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0);
    let scopes = civis_core::issuer_api::SCOPES.join(",");
    let (_, token) = api::issue_token(&store, &opts.agency, &scopes, "first operator", now).await?;
    store.close().await;
    let token_path = dir.join("operator.token");
    keyfile::write_secret(&token_path, token.as_bytes()).map_err(keyfile_err(&token_path))?;
    Ok(Initialized {
        config: config_path,
        did: doc.id.to_string(),
        token,
    })
}

fn keyfile_err(p: &Path) -> impl Fn(civis_registry_client::Error) -> Error + '_ {
    move |e| Error::Config(format!("{}: {e}", p.display()))
}

fn toml_key(id: &str) -> String {
    format!("{id:?}")
}
