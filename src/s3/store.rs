//! The S3 operations the replication pipeline uses, as a narrow trait: [`Client`] sends them
//! to a server; `mem::MemStore` (in memory) and `mem::Flaky` (failures injected into
//! another store) let unit tests drive the pipeline without a server or a process.
//!
//! Generic code over [`ObjectStore`] is monomorphized: the pipeline over [`Client`] is the
//! same code as before the trait existed.

use super::client::{ChecksumTransport, Client};
use super::ops::abort_multipart_upload::AbortMultipartUploadError;
use super::ops::acl::{Grant, ObjectAcl};
use super::ops::complete_multipart_upload::{CompleteMultipartUploadError, CompleteOutput};
use super::ops::create_multipart_upload::CreateMultipartUploadError;
use super::ops::delete_object::{DeleteObjectError, DeleteObjectOutput};
use super::ops::get_object::{GetObjectError, GetObjectOutput, GetObjectRequest};
use super::ops::head_object::{HeadObjectError, HeadObjectRequest};
use super::ops::list_multipart_uploads::{ListMultipartUploadsError, OpenUpload};
use super::ops::list_object_versions::{
    ListObjectVersionsError, ListObjectVersionsPage, ListObjectVersionsRequest,
};
use super::ops::list_objects_v2::{ListObjectsV2Page, ListObjectsV2Request};
use super::ops::put_object::{PutObjectError, PutObjectOutput, PutObjectRequest};
use super::ops::tagging::TaggingError;
use super::ops::upload_part::{CompletedPart, UploadPartError, UploadPartRequest};
use super::ops::{ObjectHead, ObjectMetadata};

/// A change to a version's metadata that leaves its bytes alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataWrite {
    Tags(Vec<(String, String)>),
    DeleteTags,
    Acl(ObjectAcl),
    /// Retention to set (`mode` absent: none).
    Retention {
        mode: Option<String>,
        retain_until: Option<String>,
    },
    LegalHold(bool),
}

impl MetadataWrite {
    /// The S3 operation that makes the change.
    pub fn operation(&self) -> &'static str {
        match self {
            MetadataWrite::Tags(_) => "PutObjectTagging",
            MetadataWrite::DeleteTags => "DeleteObjectTagging",
            MetadataWrite::Acl(_) => "PutObjectAcl",
            MetadataWrite::Retention { .. } => "PutObjectRetention",
            MetadataWrite::LegalHold(_) => "PutObjectLegalHold",
        }
    }
}

/// One endpoint's object operations, as the replication pipeline needs them.
#[allow(async_fn_in_trait)] // used on one shard: the futures need not be `Send`
pub trait ObjectStore {
    /// How an upload whose CRC32C is not known upfront carries one.
    fn checksum_transport(&self) -> ChecksumTransport;
    /// Whether multipart copies are read back to check their CRC32C.
    fn verify_after_write(&self) -> bool;
    /// The endpoint as a site name (`host`, or `host:port` off the scheme's default port).
    fn site(&self) -> String;

    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        opts: HeadObjectRequest<'_>,
    ) -> Result<ObjectHead, HeadObjectError>;

    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        opts: GetObjectRequest<'_>,
    ) -> Result<GetObjectOutput, GetObjectError>;

    async fn get_object_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<(String, String)>, TaggingError>;

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        r: PutObjectRequest<'_>,
    ) -> Result<PutObjectOutput, PutObjectError>;

    /// A version's grants, sorted.
    async fn get_object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<Grant>, TaggingError>;

    /// Changes a version's tags, ACL, retention or legal hold.
    async fn put_object_metadata(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        w: &MetadataWrite,
    ) -> Result<(), TaggingError>;

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<DeleteObjectOutput, DeleteObjectError>;

    async fn list_object_versions(
        &self,
        bucket: &str,
        r: ListObjectVersionsRequest<'_>,
    ) -> Result<ListObjectVersionsPage, ListObjectVersionsError>;

    /// Current objects only, for servers without ListObjectVersions.
    async fn list_objects_v2(
        &self,
        bucket: &str,
        r: ListObjectsV2Request<'_>,
    ) -> Result<ListObjectsV2Page, ListObjectVersionsError>;

    async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<OpenUpload>, ListMultipartUploadsError>;

    async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        metadata: &ObjectMetadata,
        tags: &[(String, String)],
        crc32c: bool,
    ) -> Result<String, CreateMultipartUploadError>;

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        r: UploadPartRequest<'_>,
    ) -> Result<CompletedPart, UploadPartError>;

    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<CompleteOutput, CompleteMultipartUploadError>;

    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), AbortMultipartUploadError>;
}

impl ObjectStore for Client {
    fn checksum_transport(&self) -> ChecksumTransport {
        self.endpoint().config.checksum
    }

    fn verify_after_write(&self) -> bool {
        self.endpoint().config.verify_after_write
    }

    fn site(&self) -> String {
        self.endpoint().site()
    }

    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        opts: HeadObjectRequest<'_>,
    ) -> Result<ObjectHead, HeadObjectError> {
        Client::head_object(self, bucket, key, opts).await
    }

    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        opts: GetObjectRequest<'_>,
    ) -> Result<GetObjectOutput, GetObjectError> {
        Client::get_object(self, bucket, key, opts).await
    }

    async fn get_object_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<(String, String)>, TaggingError> {
        Client::get_object_tagging(self, bucket, key, version_id).await
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        r: PutObjectRequest<'_>,
    ) -> Result<PutObjectOutput, PutObjectError> {
        Client::put_object(self, bucket, key, r).await
    }

    async fn get_object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<Grant>, TaggingError> {
        Client::get_object_acl(self, bucket, key, version_id).await
    }

    async fn put_object_metadata(
        &self,
        bucket: &str,
        key: &str,
        vid: Option<&str>,
        w: &MetadataWrite,
    ) -> Result<(), TaggingError> {
        match w {
            MetadataWrite::Tags(t) => self.put_object_tagging(bucket, key, vid, t).await,
            MetadataWrite::DeleteTags => self.delete_object_tagging(bucket, key, vid).await,
            MetadataWrite::Acl(a) => self.put_object_acl(bucket, key, vid, a).await,
            MetadataWrite::Retention { mode, retain_until } => {
                let (m, u) = (mode.as_deref(), retain_until.as_deref());
                self.put_object_retention(bucket, key, vid, m, u).await
            }
            MetadataWrite::LegalHold(on) => self.put_object_legal_hold(bucket, key, vid, *on).await,
        }
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<DeleteObjectOutput, DeleteObjectError> {
        Client::delete_object(self, bucket, key, version_id).await
    }

    async fn list_object_versions(
        &self,
        bucket: &str,
        r: ListObjectVersionsRequest<'_>,
    ) -> Result<ListObjectVersionsPage, ListObjectVersionsError> {
        Client::list_object_versions(self, bucket, r).await
    }

    async fn list_objects_v2(
        &self,
        bucket: &str,
        r: ListObjectsV2Request<'_>,
    ) -> Result<ListObjectsV2Page, ListObjectVersionsError> {
        Client::list_objects_v2(self, bucket, r).await
    }

    async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<OpenUpload>, ListMultipartUploadsError> {
        Client::list_multipart_uploads(self, bucket, prefix).await
    }

    async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        metadata: &ObjectMetadata,
        tags: &[(String, String)],
        crc32c: bool,
    ) -> Result<String, CreateMultipartUploadError> {
        Client::create_multipart_upload(self, bucket, key, metadata, tags, crc32c).await
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        r: UploadPartRequest<'_>,
    ) -> Result<CompletedPart, UploadPartError> {
        Client::upload_part(self, bucket, key, r).await
    }

    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<CompleteOutput, CompleteMultipartUploadError> {
        Client::complete_multipart_upload(self, bucket, key, upload_id, parts).await
    }

    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), AbortMultipartUploadError> {
        Client::abort_multipart_upload(self, bucket, key, upload_id).await
    }
}
