//! watchkv actors
