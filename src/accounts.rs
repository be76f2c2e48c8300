//! Local users and groups, from `/etc/passwd` and `/etc/group`.
//!
//! Both the peer lookup (who is this uid, which groups is it in) and the token files (which gid
//! does a role's `group` name) need them. Parsing is pure; [`read`] does the I/O. Accounts only
//! known to a directory service (LDAP, SSSD) are not in these files: such a user is known by uid
//! alone, and such a group cannot be a role's `group`.

use std::path::Path;

/// The account databases.
pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";

/// Reads an account file; an unreadable one counts as empty (no names known).
pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The name of `uid` in the text of `/etc/passwd`, and its primary group id.
pub fn user_name(passwd: &str, uid: u32) -> Option<(String, u32)> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let (name, id, gid) = (fields.first()?, fields.get(2)?, fields.get(3)?);
        (id.parse() == Ok(uid)).then(|| Some((name.to_string(), gid.parse().ok()?)))?
    })
}

/// The groups (by name) of `user` with primary group `gid`, in the text of `/etc/group`.
pub fn groups_of(group_file: &str, user: &str, gid: u32) -> Vec<String> {
    group_file
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let (name, id, members) = (fields.first()?, fields.get(2)?, fields.get(3)?);
            let member = members.split(',').any(|m| m == user);
            (member || id.parse() == Ok(gid)).then(|| name.to_string())
        })
        .collect()
}

/// The id of group `name` in the text of `/etc/group`.
pub fn group_id(group_file: &str, name: &str) -> Option<u32> {
    group_file.lines().find_map(|line| {
        let mut fields = line.split(':');
        let found = fields.next()? == name;
        found.then(|| fields.nth(1)?.parse().ok())?
    })
}

/// The name of group `gid` in the text of `/etc/group`.
pub fn group_name(group_file: &str, gid: u32) -> Option<String> {
    group_file.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let id: u32 = fields.get(2)?.parse().ok()?;
        (id == gid).then(|| fields[0].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str =
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1001:1001::/home/alice:/bin/sh\n";
    const GROUP_TEXT: &str =
        "root:x:0:\nalice:x:1001:\nassume-roled:x:998:alice,bob\nops:x:1500:bob\n";

    #[test]
    fn users_and_their_groups() {
        assert_eq!(
            user_name(PASSWD_TEXT, 1001),
            Some(("alice".to_owned(), 1001))
        );
        assert_eq!(user_name(PASSWD_TEXT, 4242), None);
        assert_eq!(
            groups_of(GROUP_TEXT, "alice", 1001),
            vec!["alice", "assume-roled"]
        );
    }

    #[test]
    fn group_ids_and_names() {
        assert_eq!(group_id(GROUP_TEXT, "ops"), Some(1500));
        assert_eq!(group_id(GROUP_TEXT, "op"), None);
        assert_eq!(group_id(GROUP_TEXT, "nobody"), None);
        assert_eq!(group_name(GROUP_TEXT, 998).as_deref(), Some("assume-roled"));
        assert_eq!(group_name(GROUP_TEXT, 7), None);
    }
}
