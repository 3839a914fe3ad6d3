#!/bin/sh
# Creates the backups bucket in the compose store (MinIO, or SeaweedFS with the profile;
# idempotent). MinIO removes multipart uploads left behind by a crash on its own
# (MINIO_API_STALE_UPLOADS_EXPIRY, 24h default).
set -eu
mc alias set store "$S3_ENDPOINT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
mc mb --ignore-existing "store/$BUCKET"
echo "bucket $BUCKET ready at $S3_ENDPOINT"
