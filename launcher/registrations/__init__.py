"""Dynamo's registrations in etcd, NATS and the file store: reading them, clear-namespace's
decision and runner, and `up`'s namespace lock and fencing."""
