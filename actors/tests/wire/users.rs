//! The users and roles the auth tests set up through an `etcd-client` connection.

use etcd_client::{Client, Permission};

/// Users `root` (password `rootpw`, the root role) and `alice` (`apw`, role `app`: read and
/// write on the prefix `app/`): six changes to the auth store. Auth stays off.
pub async fn add_root_and_alice(admin: &mut Client) {
    admin.user_add("root", "rootpw", None).await.expect("root");
    admin.user_grant_role("root", "root").await.expect("root role");
    admin.role_add("app").await.expect("role");
    admin.role_grant_permission("app", Permission::read_write("app/").with_prefix()).await.expect("grant");
    admin.user_add("alice", "apw", None).await.expect("alice");
    admin.user_grant_role("alice", "app").await.expect("grant role");
}
