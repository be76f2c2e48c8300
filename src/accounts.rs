//! Users and groups, as the system's name service knows them (`getpwuid_r`, `getgrnam_r`,
//! `getgrouplist` through the `uzers` crate): local files, and directory services such as SSSD or
//! LDAP where `nsswitch.conf` names them.
//!
//! Both the peer lookup (who is this uid, which groups is it in) and the token files (which gid
//! does a role's `group` name) need them. These calls may block (a directory service is a network
//! round trip away), so callers cache: see [`crate::peer`].

/// The local account files; their modification times tell caches when local accounts changed.
pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";

/// The name of `uid` and its primary group id.
pub fn user(uid: u32) -> Option<(String, u32)> {
    let user = uzers::get_user_by_uid(uid)?;
    Some((user.name().to_str()?.to_owned(), user.primary_group_id()))
}

/// The names of the groups of `user` (primary group `gid` included).
pub fn groups_of(user: &str, gid: u32) -> Vec<String> {
    uzers::get_user_groups(user, gid)
        .unwrap_or_default()
        .iter()
        .filter_map(|group| group.name().to_str().map(str::to_owned))
        .collect()
}

/// The id of user `name`.
pub fn user_id(name: &str) -> Option<u32> {
    uzers::get_user_by_name(name).map(|user| user.uid())
}

/// The id of group `name`.
pub fn group_id(name: &str) -> Option<u32> {
    uzers::get_group_by_name(name).map(|group| group.gid())
}

/// The name of group `gid`.
pub fn group_name(gid: u32) -> Option<String> {
    let group = uzers::get_group_by_gid(gid)?;
    group.name().to_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Linux system has root, uid 0, in group root, gid 0.
    #[test]
    fn root_is_known() {
        assert_eq!(user(0), Some(("root".to_owned(), 0)));
        assert!(groups_of("root", 0).contains(&"root".to_owned()));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(user_id("root"), Some(0));
        assert_eq!(user_id("no-such-user-here"), None);
        assert_eq!(group_name(0).as_deref(), Some("root"));
        assert_eq!(group_id("no-such-group-here"), None);
        assert_eq!(user(4_000_000_000), None);
    }
}
