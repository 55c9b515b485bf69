"""Block stores: the protocol, the embedded directory store and S3."""
