//! Cluster uploads on a real PostgreSQL 15 (support/postgres.rs): a file put through one node's
//! `PostgresUploads` is read byte for byte through another's, only by those the appliance's rule
//! lets read it; refused files store nothing; equal files share their bytes until the last goes.
//!
//! Each test prints one line and passes when PostgreSQL is not installed.

use futures_util::StreamExt;
use kefu::chat::message_store::MessageStore;
use kefu::chat::messages::{NewMessage, Target};
use kefu::chat::uploads::{Upload, UploadError, UploadTarget};
use kefu::cluster::messages::{PostgresMessages, PostgresOptions};
use kefu::cluster::uploads::{CHUNK_BYTES, PostgresUploads};
use kefu::people::principal::Principal;
use kefu::people::visitors::Visitor;
use kefu::protocol::{ParticipantView, SenderKind, SenderView};

use crate::support::postgres::database;

const MAX_BYTES: usize = 20 * 1024 * 1024;

fn visitor(site: &str, id: u64) -> Principal {
    Principal::Visitor(Visitor { id, site: site.to_owned(), ..Visitor::default() })
}

/// Opens the conversation of visitor `visitor_id` of `site` with a first message.
async fn conversation(store: &PostgresMessages, site: &str, visitor_id: u64) -> u64 {
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

async fn read_all(uploads: &PostgresUploads, id: &str, principal: &Principal) -> Option<(Upload, Vec<u8>, usize)> {
    let content = uploads.get(id, principal).await.expect("get")?;
    let mut chunks = content.chunks;
    let mut bytes = Vec::new();
    let mut n_chunks = 0;
    while let Some(chunk) = chunks.next().await {
        bytes.extend_from_slice(&chunk.expect("a chunk"));
        n_chunks += 1;
    }
    Some((content.upload, bytes, n_chunks))
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
        .put(agents_upload("shop", conversation_id), "../报价单 2026.bin", bytes.as_slice(), MAX_BYTES)
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
    let small = node_a.put(own, "note.txt", &b"a note"[..], MAX_BYTES).await.expect("put");
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
        .put(agents_upload("shop", conversation_id), "a.bin", &file_bytes(small_limit + 1, 1)[..], small_limit)
        .await;
    assert!(matches!(refused, Err(UploadError::TooLarge(1000))), "{refused:?}");
    let big = file_bytes(3 * CHUNK_BYTES + 1, 2);
    let refused = uploads.put(agents_upload("shop", conversation_id), "a.bin", big.as_slice(), 3 * CHUNK_BYTES).await;
    assert_eq!(
        refused.expect_err("too large").to_string(),
        format!("the file is larger than {} bytes", 3 * CHUNK_BYTES)
    );

    let empty = uploads.put(agents_upload("shop", conversation_id), "a.bin", &b""[..], MAX_BYTES).await;
    assert!(matches!(empty, Err(UploadError::Empty)), "{empty:?}");
    let mut elf = vec![0x7F, b'E', b'L', b'F', 2, 1, 1, 0];
    elf.resize(64, 0);
    let executable = uploads.put(agents_upload("shop", conversation_id), "run", elf.as_slice(), MAX_BYTES).await;
    assert!(matches!(executable, Err(UploadError::Refused)), "{executable:?}");
    let nameless = uploads.put(agents_upload("shop", conversation_id), "../", &b"text"[..], MAX_BYTES).await;
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

    let first =
        node_a.put(agents_upload("shop", conversation_id), "a.bin", bytes.as_slice(), MAX_BYTES).await.expect("put");
    let second =
        node_b.put(agents_upload("shop", conversation_id), "b.bin", bytes.as_slice(), MAX_BYTES).await.expect("put");
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
    let (from_a, from_b) = tokio::join!(
        node_a.put(agents_upload("shop", conversation_id), "a.bin", bytes.as_slice(), MAX_BYTES),
        node_b.put(agents_upload("shop", conversation_id), "b.bin", bytes.as_slice(), MAX_BYTES),
    );
    let (from_a, from_b) = (from_a.expect("put through a"), from_b.expect("put through b"));
    assert_eq!(counts(&url).await, (2, 1, 3));
    for id in [&from_a.id, &from_b.id] {
        assert_eq!(read_all(&node_b, id, &visitor("shop", 1)).await.expect("readable").1, bytes);
    }
}
