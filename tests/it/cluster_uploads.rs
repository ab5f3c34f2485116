//! Uploads behind their storage boundary (`UploadStore`) on both backends, the appliance's redb
//! with `DATA_DIR/uploads` and the cluster's PostgreSQL 15 (support/postgres.rs): the same calls
//! give the same answers (files stored with their names cleaned, Chinese ones kept, and their
//! types sniffed; records and bytes read back; the site's bytes counted), and bad input (an empty,
//! oversized or executable file, a name without a file name, a file past the quota, an unknown id,
//! someone else's upload) is refused with nothing changed. On PostgreSQL, a file put through one
//! node is read byte for byte through another's, equal files share their bytes until the last
//! goes, and two nodes storing at once keep to the quota.
//!
//! The PostgreSQL tests print one line and pass when PostgreSQL is not installed.

use bytes::Bytes;
use futures_util::StreamExt;
use kefu::chat::message_store::MessageStore;
use kefu::chat::messages::{NewMessage, Target};
use kefu::chat::upload_store::{UploadBytes, UploadStore};
use kefu::chat::uploads::{AttachmentKind, Upload, UploadError, UploadQuota, UploadTarget};
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::cluster::uploads::{CHUNK_BYTES, PostgresUploads};
use kefu::people::principal::Principal;
use kefu::people::visitors::Visitor;
use kefu::protocol::{ParticipantView, SenderKind, SenderView};

use crate::support::TestServer;
use crate::support::postgres::database;

const MAX_BYTES: usize = 20 * 1024 * 1024;

fn visitor(site: &str, id: u64) -> Principal {
    Principal::Visitor(Visitor { id, site: site.to_owned(), ..Visitor::default() })
}

/// No quota.
fn unlimited() -> UploadQuota {
    UploadQuota::new(0)
}

/// Opens the conversation of visitor `visitor_id` of `site` with a first message.
async fn conversation(store: &impl MessageStore, site: &str, visitor_id: u64) -> u64 {
    let sender = SenderView { kind: SenderKind::Visitor, id: visitor_id, name: "visitor".to_owned() };
    let target = Target::VisitorInbox { site: site.to_owned(), visitor_id };
    store
        .append(NewMessage::text(target, sender, format!("hello-{visitor_id}"), "hello".into()))
        .await
        .expect("append")
        .conversation_id
}

/// An agent's upload to a conversation of `site`.
fn agents_upload(site: &str, conversation_id: u64) -> UploadTarget {
    UploadTarget {
        uploader: ParticipantView { kind: SenderKind::Agent, id: 7 },
        site: site.to_owned(),
        conversation_id: Some(conversation_id),
    }
}

/// Bytes that do not compress and look like no known file type.
fn file_bytes(n_bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..n_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Every part of `bytes`, joined, and how many parts there were.
async fn joined(mut bytes: UploadBytes) -> (Vec<u8>, usize) {
    let mut joined = Vec::new();
    let mut n_parts = 0;
    while let Some(part) = bytes.next().await {
        joined.extend_from_slice(&part.expect("a part"));
        n_parts += 1;
    }
    (joined, n_parts)
}

async fn read_all(uploads: &impl UploadStore, id: &str, principal: &Principal) -> Option<(Upload, Vec<u8>, usize)> {
    let content = uploads.readable(id, principal).await.expect("readable")?;
    let (bytes, n_parts) = joined(content.bytes).await;
    Some((content.upload, bytes, n_parts))
}

/// The same calls on `store`, for conversation `conversation_id` of visitor 1 of `site`; the
/// site's quota is 1 MB.
async fn behaves_as_an_upload_store(store: &impl UploadStore, site: &str, conversation_id: u64) {
    const QUOTA: u64 = 1_000_000;
    let quota = UploadQuota::new(QUOTA);
    let put = async |name: &str, bytes: &[u8], max_bytes: usize| {
        let bytes = Bytes::copy_from_slice(bytes);
        store.store(&quota, agents_upload(site, conversation_id), name.to_owned(), bytes, max_bytes).await
    };
    let mut elf = vec![0x7F, b'E', b'L', b'F', 2, 1, 1, 0];
    elf.resize(64, 0);
    for (refused, expected) in [
        (put("空.txt", b"", MAX_BYTES).await, "the file is empty"),
        (put("大.bin", &file_bytes(1001, 1), 1000).await, "the file is larger than 1000 bytes"),
        (put("运行", &elf, MAX_BYTES).await, "executable files are not accepted"),
        (put("目录/../", b"text", MAX_BYTES).await, "name: a file name is required"),
        (
            put("配额.bin", &file_bytes(QUOTA as usize + 1, 2), MAX_BYTES).await,
            "the site's upload quota of 1000000 bytes is used up",
        ),
    ] {
        assert_eq!(refused.expect_err(expected).to_string(), expected);
    }
    assert_eq!(store.bytes_of_site(site).await.unwrap(), 0, "nothing stored");

    let text = "您好，这是 2026 年的报价单。".as_bytes();
    let quote = put("../../报价单 2026.txt", text, MAX_BYTES).await.expect("store a text file");
    assert_eq!(
        (quote.name.as_str(), quote.size, quote.content_type.as_str(), quote.kind),
        ("报价单 2026.txt", text.len() as u64, "text/plain", AttachmentKind::File)
    );
    assert_eq!((quote.site.as_str(), quote.conversation_id, quote.attached), (site, Some(conversation_id), false));
    let record = store.upload(&quote.id).await.unwrap().expect("the record");
    assert_eq!((record.name, record.size, record.uploader.id), (quote.name.clone(), quote.size, 7));
    let (read, bytes, _) = read_all(store, &quote.id, &visitor(site, 1)).await.expect("the visitor reads it");
    assert_eq!((read.id.as_str(), bytes.as_slice()), (quote.id.as_str(), text));
    assert_eq!(joined(store.bytes(&quote.id).await.unwrap().expect("its bytes")).await.0, text);

    // Several parts, read back in order.
    let big = file_bytes(2 * CHUNK_BYTES + 10, 3);
    let archive = put("资料.bin", &big, MAX_BYTES).await.expect("store a file of three parts");
    let (_, bytes, n_parts) = read_all(store, &archive.id, &visitor(site, 1)).await.expect("readable");
    assert!(bytes == big && n_parts == 3, "{n_parts} parts");
    let used = store.bytes_of_site(site).await.unwrap();
    assert_eq!(used, quote.size + archive.size);

    // A visitor's own file, before any conversation has it: theirs only.
    let own = UploadTarget {
        uploader: ParticipantView { kind: SenderKind::Visitor, id: 2 },
        site: site.to_owned(),
        conversation_id: None,
    };
    let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, b'I', b'H', b'D', b'R'];
    let photo = store.store(&quota, own, "照片.png".into(), Bytes::copy_from_slice(&png), MAX_BYTES).await.unwrap();
    assert_eq!((photo.content_type.as_str(), photo.kind), ("image/png", AttachmentKind::Image));
    assert_eq!(read_all(store, &photo.id, &visitor(site, 2)).await.expect("the uploader reads it").1, png);

    // Someone else's upload, the same visitor id on another site, and unknown ids: not found.
    assert!(read_all(store, &photo.id, &visitor(site, 1)).await.is_none());
    assert!(read_all(store, &quote.id, &visitor(site, 2)).await.is_none());
    assert!(read_all(store, &quote.id, &visitor("another-site", 1)).await.is_none());
    assert!(read_all(store, "no-such-upload", &visitor(site, 1)).await.is_none());
    assert!(store.upload("no-such-upload").await.unwrap().is_none());
    assert!(store.bytes("no-such-upload").await.unwrap().is_none());

    // Past the quota by one byte: refused, nothing counted; up to it: stored.
    let used = store.bytes_of_site(site).await.unwrap();
    let room = (QUOTA - used) as usize;
    let refused = put("满.bin", &file_bytes(room + 1, 4), MAX_BYTES).await;
    assert!(matches!(refused, Err(UploadError::QuotaExceeded(QUOTA))), "{refused:?}");
    assert_eq!(store.bytes_of_site(site).await.unwrap(), used);
    put("满.bin", &file_bytes(room, 4), MAX_BYTES).await.expect("the quota's last bytes");
    assert_eq!(store.bytes_of_site(site).await.unwrap(), QUOTA);
    assert_eq!(store.bytes_of_site("another-site").await.unwrap(), 0);
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let site = server.create_site("网店").await;
    let store = server.store();
    let conversation_id = conversation(store, &site.key, 1).await;
    behaves_as_an_upload_store(store, &site.key, conversation_id).await;

    let Some(url) = database("uploads_alike").await else { return };
    let messages = PostgresMessages::open(&url, PostgresOptions::default()).await.expect("open the message store");
    let conversation_id = conversation(&messages, "shop", 1).await;
    let uploads = PostgresUploads::open(&url).await.expect("open the uploads");
    behaves_as_an_upload_store(&uploads, "shop", conversation_id).await;
}

#[tokio::test]
async fn on_postgresql_two_nodes_storing_at_once_keep_to_the_quota() {
    let Some(url) = database("uploads_quota_nodes").await else { return };
    let messages = PostgresMessages::open(&url, PostgresOptions::default()).await.expect("open the message store");
    let conversation_id = conversation(&messages, "shop", 1).await;
    let (node_a, node_b) = (PostgresUploads::open(&url).await.unwrap(), PostgresUploads::open(&url).await.unwrap());
    let (quota_a, quota_b) = (UploadQuota::new(3 * CHUNK_BYTES as u64), UploadQuota::new(3 * CHUNK_BYTES as u64));
    let (first, second) = (file_bytes(2 * CHUNK_BYTES, 5), file_bytes(2 * CHUNK_BYTES, 6));
    let (from_a, from_b) = tokio::join!(
        node_a.put(&quota_a, agents_upload("shop", conversation_id), "a.bin", first.as_slice(), MAX_BYTES),
        node_b.put(&quota_b, agents_upload("shop", conversation_id), "b.bin", second.as_slice(), MAX_BYTES),
    );
    let refused = if from_a.is_ok() { from_b } else { from_a };
    assert!(matches!(refused, Err(UploadError::QuotaExceeded(_))), "one of the two is refused: {refused:?}");
    assert_eq!(node_a.bytes_of_site("shop").await.unwrap(), 2 * CHUNK_BYTES as u64);
    assert_eq!(counts(&url).await, (1, 1, 2), "the refused file's chunks are gone");
}

async fn counts(url: &str) -> (i64, i64, i64) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM uploads), (SELECT count(*) FROM upload_contents), (SELECT count(*) FROM upload_chunks)",
            &[],
        )
        .await
        .expect("count");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn a_file_put_through_one_node_is_read_identical_through_another_by_its_conversation_only() {
    let Some(url) = database("uploads_across_nodes").await else { return };
    let messages = PostgresMessages::open(&url, PostgresOptions::default()).await.expect("open the message store");
    let conversation_id = conversation(&messages, "shop", 1).await;
    let other_conversation = conversation(&messages, "shop", 2).await;
    let node_a = PostgresUploads::open(&url).await.expect("open node a's uploads");
    let node_b = PostgresUploads::open(&url).await.expect("open node b's uploads");

    let bytes = file_bytes(MAX_BYTES, 29);
    let upload = node_a
        .put(&unlimited(), agents_upload("shop", conversation_id), "../报价单 2026.bin", bytes.as_slice(), MAX_BYTES)
        .await
        .expect("put a 20 MB file");
    assert_eq!(
        (upload.name.as_str(), upload.size, upload.content_type.as_str()),
        ("报价单 2026.bin", MAX_BYTES as u64, "application/octet-stream")
    );

    let (read, read_bytes, n_chunks) =
        read_all(&node_b, &upload.id, &visitor("shop", 1)).await.expect("the visitor reads it");
    assert!(read_bytes == bytes, "the bytes read through node b are the bytes put through node a");
    assert_eq!(n_chunks, MAX_BYTES.div_ceil(CHUNK_BYTES));
    assert_eq!((read.id, read.conversation_id, read.uploader.id), (upload.id.clone(), Some(conversation_id), 7));

    // Another conversation's visitor, the same visitor id on another site, and an unknown id:
    // all not found.
    assert_ne!(other_conversation, conversation_id);
    assert!(read_all(&node_b, &upload.id, &visitor("shop", 2)).await.is_none());
    assert!(read_all(&node_b, &upload.id, &visitor("clinic", 1)).await.is_none());
    assert!(read_all(&node_b, "no-such-upload", &visitor("shop", 1)).await.is_none());
    // The uploader reads their own file before any conversation has it.
    let own = UploadTarget {
        uploader: ParticipantView { kind: SenderKind::Visitor, id: 2 },
        site: "shop".into(),
        conversation_id: None,
    };
    let small = node_a.put(&unlimited(), own, "note.txt", &b"a note"[..], MAX_BYTES).await.expect("put");
    assert_eq!(read_all(&node_b, &small.id, &visitor("shop", 2)).await.expect("the uploader reads it").1, b"a note");
    assert!(read_all(&node_b, &small.id, &visitor("shop", 1)).await.is_none());
}

#[tokio::test]
async fn refused_files_store_nothing() {
    let Some(url) = database("refused_uploads").await else { return };
    let messages = PostgresMessages::open(&url, PostgresOptions::default()).await.expect("open the message store");
    let conversation_id = conversation(&messages, "shop", 1).await;
    let uploads = PostgresUploads::open(&url).await.expect("open the uploads");

    // Over the limit within the first chunk, and after several chunks were written.
    let small_limit = 1000;
    let refused = uploads
        .put(
            &unlimited(),
            agents_upload("shop", conversation_id),
            "a.bin",
            &file_bytes(small_limit + 1, 1)[..],
            small_limit,
        )
        .await;
    assert!(matches!(refused, Err(UploadError::TooLarge(1000))), "{refused:?}");
    let big = file_bytes(3 * CHUNK_BYTES + 1, 2);
    let refused = uploads
        .put(&unlimited(), agents_upload("shop", conversation_id), "a.bin", big.as_slice(), 3 * CHUNK_BYTES)
        .await;
    assert_eq!(
        refused.expect_err("too large").to_string(),
        format!("the file is larger than {} bytes", 3 * CHUNK_BYTES)
    );

    let empty = uploads.put(&unlimited(), agents_upload("shop", conversation_id), "a.bin", &b""[..], MAX_BYTES).await;
    assert!(matches!(empty, Err(UploadError::Empty)), "{empty:?}");
    let mut elf = vec![0x7F, b'E', b'L', b'F', 2, 1, 1, 0];
    elf.resize(64, 0);
    let executable =
        uploads.put(&unlimited(), agents_upload("shop", conversation_id), "run", elf.as_slice(), MAX_BYTES).await;
    assert!(matches!(executable, Err(UploadError::Refused)), "{executable:?}");
    let nameless =
        uploads.put(&unlimited(), agents_upload("shop", conversation_id), "../", &b"text"[..], MAX_BYTES).await;
    assert!(matches!(nameless, Err(UploadError::Invalid(_))), "{nameless:?}");

    assert_eq!(counts(&url).await, (0, 0, 0), "no upload, content or chunk is left");
}

#[tokio::test]
async fn equal_files_share_their_bytes_and_delete_removes_them_with_the_last() {
    let Some(url) = database("upload_dedup_delete").await else { return };
    let messages = PostgresMessages::open(&url, PostgresOptions::default()).await.expect("open the message store");
    let conversation_id = conversation(&messages, "shop", 1).await;
    let node_a = PostgresUploads::open(&url).await.expect("open node a's uploads");
    let node_b = PostgresUploads::open(&url).await.expect("open node b's uploads");
    let bytes = file_bytes(2 * CHUNK_BYTES + 10, 3);

    let first = node_a
        .put(&unlimited(), agents_upload("shop", conversation_id), "a.bin", bytes.as_slice(), MAX_BYTES)
        .await
        .expect("put");
    let second = node_b
        .put(&unlimited(), agents_upload("shop", conversation_id), "b.bin", bytes.as_slice(), MAX_BYTES)
        .await
        .expect("put");
    assert_ne!(first.id, second.id);
    assert_eq!(counts(&url).await, (2, 1, 3), "two uploads, one content of three chunks");

    assert!(node_b.delete(&first.id).await.expect("delete"));
    assert!(read_all(&node_a, &first.id, &visitor("shop", 1)).await.is_none(), "a deleted upload is not found");
    assert_eq!(read_all(&node_a, &second.id, &visitor("shop", 1)).await.expect("still there").1, bytes);
    assert_eq!(counts(&url).await, (1, 1, 3));

    assert!(node_a.delete(&second.id).await.expect("delete"));
    assert_eq!(counts(&url).await, (0, 0, 0), "the last upload's bytes go with it");
    assert!(!node_a.delete(&second.id).await.expect("delete"), "deleting again finds nothing");

    // The same bytes put through two nodes at once: one content, both readable.
    let no_quota = unlimited();
    let (from_a, from_b) = tokio::join!(
        node_a.put(&no_quota, agents_upload("shop", conversation_id), "a.bin", bytes.as_slice(), MAX_BYTES),
        node_b.put(&no_quota, agents_upload("shop", conversation_id), "b.bin", bytes.as_slice(), MAX_BYTES),
    );
    let (from_a, from_b) = (from_a.expect("put through a"), from_b.expect("put through b"));
    assert_eq!(counts(&url).await, (2, 1, 3));
    for id in [&from_a.id, &from_b.id] {
        assert_eq!(read_all(&node_b, id, &visitor("shop", 1)).await.expect("readable").1, bytes);
    }
}
