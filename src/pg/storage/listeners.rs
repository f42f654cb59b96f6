//! SQL for `runledger_event_listeners` on PostgreSQL (migrations/postgres/P3): the sessions
//! that follow job events. An appended event sends its NOTIFY only while one is registered,
//! so the commits of the workers' hot path do not take PostgreSQL's notify lock for nobody.

use postgres::Client;

use crate::error::Result;
use crate::pg::error::from_pg;

/// Registers the calling session (after its `LISTEN runledger_events`), in one transaction:
/// the exclusive lock waits for the writers that read the table before (their events are
/// committed when this returns) and makes every later writer see the row; the rows of
/// sessions that ended without unregistering go. The lock waits at most 5 s (writers queue
/// behind it meanwhile): a transaction left open after appending an event fails the
/// registration instead of stalling every writer.
const REGISTER: &str = "set local lock_timeout = '5s';
    lock table runledger_event_listeners in access exclusive mode;
    delete from runledger_event_listeners
     where pid not in (select pid from pg_stat_activity where pid is not null);
    insert into runledger_event_listeners (pid) values (pg_backend_pid()) on conflict do nothing";

/// Unregisters the calling session.
const UNREGISTER: &str = "delete from runledger_event_listeners where pid = pg_backend_pid()";

/// Registers `client`'s session as an event listener; see [`REGISTER`].
pub(crate) fn register(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction().map_err(from_pg)?;
    tx.batch_execute(REGISTER).map_err(from_pg)?;
    tx.commit().map_err(from_pg)
}

/// Unregisters `client`'s session (a session that ends without it is removed by the next
/// registration).
pub(crate) fn unregister(client: &mut Client) -> Result<()> {
    client.batch_execute(UNREGISTER).map_err(from_pg)
}
