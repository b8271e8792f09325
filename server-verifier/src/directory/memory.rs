//! A [`Directory`] in memory: one process, nothing kept (tests, demos).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::{
    Directory, DirectoryError, Group, MAX_GROUPS, MAX_SESSION_ENDS, MAX_USERS, RecoveryGrant,
    Session, SessionEnd, SessionLimits, SessionRef, User,
};

#[derive(Debug, Default)]
struct State {
    /// By id, in creation order (`seq`).
    users: HashMap<String, (u64, User)>,
    groups: HashMap<String, (u64, Group)>,
    owners: BTreeMap<String, String>,
    sessions: HashMap<String, Session>,
    ends: Vec<SessionEnd>,
    recoveries: HashMap<String, RecoveryGrant>,
    seq: u64,
}

/// A [`Directory`] held in memory.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    state: Mutex<State>,
}

impl MemoryDirectory {
    fn state(&self) -> Result<MutexGuard<'_, State>, DirectoryError> {
        self.state.lock().map_err(|_| DirectoryError::Poisoned)
    }
}

impl State {
    fn name_taken(&self, user_name: &str, except: &str) -> bool {
        self.users
            .values()
            .any(|(_, u)| u.id != except && u.user_name.eq_ignore_ascii_case(user_name))
    }

    fn group_name_taken(&self, name: &str, except: &str) -> bool {
        self.groups
            .values()
            .any(|(_, g)| g.id != except && g.display_name == name)
    }

    fn check_members(&self, group: &Group) -> Result<(), DirectoryError> {
        match group.members.iter().find(|m| !self.users.contains_key(*m)) {
            Some(missing) => Err(DirectoryError::NotFound(format!("user {missing}"))),
            None => Ok(()),
        }
    }

    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

fn sorted<T: Clone>(map: &HashMap<String, (u64, T)>) -> Vec<T> {
    let mut rows: Vec<&(u64, T)> = map.values().collect();
    rows.sort_by_key(|(seq, _)| *seq);
    rows.into_iter().map(|(_, value)| value.clone()).collect()
}

impl Directory for MemoryDirectory {
    fn create_user(&self, user: &User) -> Result<(), DirectoryError> {
        user.validate()?;
        let mut state = self.state()?;
        if state.users.contains_key(&user.id) || state.name_taken(&user.user_name, "") {
            return Err(DirectoryError::Conflict(user.user_name.clone()));
        }
        if state.users.len() >= MAX_USERS {
            return Err(DirectoryError::Full("users"));
        }
        let seq = state.next();
        state.users.insert(user.id.clone(), (seq, user.clone()));
        Ok(())
    }

    fn replace_user(&self, user: &User) -> Result<(), DirectoryError> {
        user.validate()?;
        let mut state = self.state()?;
        if state.name_taken(&user.user_name, &user.id) {
            return Err(DirectoryError::Conflict(user.user_name.clone()));
        }
        match state.users.get_mut(&user.id) {
            Some((_, stored)) => {
                *stored = user.clone();
                Ok(())
            }
            None => Err(DirectoryError::NotFound(format!("user {}", user.id))),
        }
    }

    fn user(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        Ok(self.state()?.users.get(id).map(|(_, u)| u.clone()))
    }

    fn user_by_name(&self, user_name: &str) -> Result<Option<User>, DirectoryError> {
        Ok(self
            .state()?
            .users
            .values()
            .find(|(_, u)| u.user_name.eq_ignore_ascii_case(user_name))
            .map(|(_, u)| u.clone()))
    }

    fn list_users(&self) -> Result<Vec<User>, DirectoryError> {
        Ok(sorted(&self.state()?.users))
    }

    fn delete_user(&self, id: &str) -> Result<bool, DirectoryError> {
        let mut state = self.state()?;
        if state.users.remove(id).is_none() {
            return Ok(false);
        }
        for (_, group) in state.groups.values_mut() {
            group.members.retain(|m| m != id);
        }
        state.owners.retain(|_, owner| owner != id);
        Ok(true)
    }

    fn create_group(&self, group: &Group) -> Result<(), DirectoryError> {
        group.validate()?;
        let mut state = self.state()?;
        if state.groups.contains_key(&group.id) || state.group_name_taken(&group.display_name, "") {
            return Err(DirectoryError::Conflict(group.display_name.clone()));
        }
        if state.groups.len() >= MAX_GROUPS {
            return Err(DirectoryError::Full("groups"));
        }
        state.check_members(group)?;
        let seq = state.next();
        let mut group = group.clone();
        group.members.sort();
        group.members.dedup();
        state.groups.insert(group.id.clone(), (seq, group));
        Ok(())
    }

    fn replace_group(&self, group: &Group) -> Result<(), DirectoryError> {
        group.validate()?;
        let mut state = self.state()?;
        if state.group_name_taken(&group.display_name, &group.id) {
            return Err(DirectoryError::Conflict(group.display_name.clone()));
        }
        state.check_members(group)?;
        match state.groups.get_mut(&group.id) {
            Some((_, stored)) => {
                *stored = group.clone();
                stored.members.sort();
                stored.members.dedup();
                Ok(())
            }
            None => Err(DirectoryError::NotFound(format!("group {}", group.id))),
        }
    }

    fn group(&self, id: &str) -> Result<Option<Group>, DirectoryError> {
        Ok(self.state()?.groups.get(id).map(|(_, g)| g.clone()))
    }

    fn list_groups(&self) -> Result<Vec<Group>, DirectoryError> {
        Ok(sorted(&self.state()?.groups))
    }

    fn delete_group(&self, id: &str) -> Result<bool, DirectoryError> {
        Ok(self.state()?.groups.remove(id).is_some())
    }

    fn groups_of(&self, user_id: &str) -> Result<Vec<String>, DirectoryError> {
        let state = self.state()?;
        let mut names: Vec<String> = state
            .groups
            .values()
            .filter(|(_, g)| g.members.iter().any(|m| m == user_id))
            .map(|(_, g)| g.display_name.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    fn assign_device(&self, device: &str, user_id: &str) -> Result<(), DirectoryError> {
        let mut state = self.state()?;
        if !state.users.contains_key(user_id) {
            return Err(DirectoryError::NotFound(format!("user {user_id}")));
        }
        state.owners.insert(device.to_owned(), user_id.to_owned());
        Ok(())
    }

    fn device_owner(&self, device: &str) -> Result<Option<String>, DirectoryError> {
        Ok(self.state()?.owners.get(device).cloned())
    }

    fn devices_of(&self, user_id: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(self
            .state()?
            .owners
            .iter()
            .filter(|(_, owner)| *owner == user_id)
            .map(|(device, _)| device.clone())
            .collect())
    }

    fn touch_session(
        &self,
        session: &Session,
        limits: &SessionLimits,
    ) -> Result<(), DirectoryError> {
        let mut state = self.state()?;
        if !state.sessions.contains_key(&session.id) {
            let of_device: Vec<(i64, String)> = state
                .sessions
                .values()
                .filter(|s| s.device == session.device)
                .map(|s| (s.last_seen_unix, s.id.clone()))
                .collect();
            if of_device.len() >= limits.max_per_device
                && let Some((_, oldest)) = of_device.iter().min()
            {
                state.sessions.remove(oldest);
            }
            if state.sessions.len() >= limits.max_sessions {
                let now = session.last_seen_unix;
                state.sessions.retain(|_, s| s.expires_unix >= now);
            }
            if state.sessions.len() >= limits.max_sessions
                && let Some(oldest) = state
                    .sessions
                    .values()
                    .min_by_key(|s| s.last_seen_unix)
                    .map(|s| s.id.clone())
            {
                state.sessions.remove(&oldest);
            }
        }
        state.sessions.insert(session.id.clone(), session.clone());
        Ok(())
    }

    fn sessions(&self, now_unix: i64) -> Result<Vec<Session>, DirectoryError> {
        let mut sessions: Vec<Session> = self
            .state()?
            .sessions
            .values()
            .filter(|s| s.expires_unix >= now_unix)
            .cloned()
            .collect();
        sessions.sort_by(|a, b| {
            b.last_seen_unix
                .cmp(&a.last_seen_unix)
                .then(a.id.cmp(&b.id))
        });
        Ok(sessions)
    }

    fn end_sessions(&self, end: &SessionEnd, now_unix: i64) -> Result<u64, DirectoryError> {
        let mut state = self.state()?;
        state.ends.retain(|e| e.keep_until_unix >= now_unix);
        if state.ends.len() >= MAX_SESSION_ENDS {
            return Err(DirectoryError::Full("force-logout records"));
        }
        state.ends.push(end.clone());
        let before = state.sessions.len();
        state.sessions.retain(|_, s| {
            !end.ends(&SessionRef {
                id: &s.id,
                device: &s.device,
                user_id: s.user_id.as_deref(),
                issued_unix: s.issued_unix,
            })
        });
        Ok(u64::try_from(before - state.sessions.len()).unwrap_or(u64::MAX))
    }

    fn session_ended(&self, session: &SessionRef<'_>) -> Result<bool, DirectoryError> {
        Ok(self.state()?.ends.iter().any(|end| end.ends(session)))
    }

    fn put_recovery(&self, grant: &RecoveryGrant) -> Result<(), DirectoryError> {
        let mut state = self.state()?;
        if state.recoveries.contains_key(&grant.token_id) {
            return Err(DirectoryError::Conflict(grant.token_id.clone()));
        }
        let now = grant.issued_unix;
        state
            .recoveries
            .retain(|_, g| g.expires_unix >= now || g.used_by_device.is_some());
        if state.recoveries.len() >= MAX_USERS {
            return Err(DirectoryError::Full("recovery grants"));
        }
        state
            .recoveries
            .insert(grant.token_id.clone(), grant.clone());
        Ok(())
    }

    fn recovery(&self, token_id: &str) -> Result<Option<RecoveryGrant>, DirectoryError> {
        Ok(self.state()?.recoveries.get(token_id).cloned())
    }

    fn use_recovery(&self, token_id: &str, device: &str) -> Result<bool, DirectoryError> {
        let mut state = self.state()?;
        match state.recoveries.get_mut(token_id) {
            Some(grant) if grant.used_by_device.is_none() => {
                grant.used_by_device = Some(device.to_owned());
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(DirectoryError::NotFound(format!("recovery {token_id}"))),
        }
    }
}
