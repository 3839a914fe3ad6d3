#!/bin/sh
# Creates the backups bucket in the compose MinIO (idempotent). MinIO removes multipart
# uploads left behind by a crash on its own (MINIO_API_STALE_UPLOADS_EXPIRY, 24h default).
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$BUCKET"
echo "bucket $BUCKET ready"
