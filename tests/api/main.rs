mod auth;
mod backups;
mod create;
mod helpers;
mod s3_server;
mod sdk;
mod tree;
