//! Carpet bombing: a flood of a multi-address asset spread over many of its addresses, each
//! of which alone stays within the asset's limits.

use crate::rules::Lim;
use crate::state::*;
use hashbrown::HashMap;
use std::net::IpAddr;

/// Addresses of a multi-address asset followed in one second.
pub(crate) const MAX_SPREAD: usize = 4096;

/// Prefixes of up to 2^this IPv4 addresses keep a cell per address for the spread.
pub(crate) const DIRECT_SPREAD_BITS: u8 = 10;

/// One address's traffic in one second.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cell {
    pub(crate) sec: u64,
    pub(crate) pkts: u32,
    pub(crate) new: u32,
    pub(crate) bytes: u64,
}

/// How one second's traffic spread over the asset's addresses.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SecSpread {
    pub(crate) sec: u64,
    /// Addresses hit (beyond the table's bound: counted, not followed).
    pub(crate) distinct: u32,
    pub(crate) max_pkts: u32,
    pub(crate) max_bytes: u64,
    pub(crate) max_new: u32,
}

/// Per-address traffic of a multi-address asset: the latest second in full, the one before
/// as its totals (records spanning the boundary judge it after the latest began).
#[derive(Debug, Default)]
pub(crate) struct Spread {
    /// A single IPv4 prefix of at most `DIRECT_SPREAD` addresses: its network and size, and
    /// a cell per address (made on first use), so no hashing.
    pub(crate) direct: Option<(u32, u32)>,
    pub(crate) cells: Vec<Cell>,
    /// Other assets: the latest second's addresses.
    pub(crate) addrs: HashMap<IpAddr, Cell>,
    pub(crate) cur: SecSpread,
    pub(crate) prev: SecSpread,
}

/// Follows per-address traffic of a multi-address asset in its latest second.
#[inline(always)]
pub(crate) fn spread(sp: &mut Spread, local: IpAddr, last: u64, inbound: &Added, new: u32) {
    if last != sp.cur.sec {
        if last < sp.cur.sec {
            // Late records count for their seconds' totals, not for the spread.
            return;
        }
        sp.next_second(last);
    }
    let Spread {
        direct,
        cells,
        addrs,
        cur: c,
        ..
    } = sp;
    let sec = c.sec;
    // A prefix followed directly whose cells are made: the cell at the address's offset.
    let i = match (*direct, local) {
        (Some((net, _)), IpAddr::V4(a)) => u32::from(a).wrapping_sub(net) as usize,
        _ => usize::MAX,
    };
    let cell = if i < cells.len() {
        &mut cells[i]
    } else {
        match other_cell(*direct, cells, addrs, c, local) {
            Some(cell) => cell,
            None => return,
        }
    };
    if cell.sec != sec {
        *cell = Cell {
            sec,
            ..Cell::default()
        };
        c.distinct += 1;
    }
    cell.pkts = cell
        .pkts
        .saturating_add(u32::try_from(inbound.pkts).unwrap_or(u32::MAX));
    cell.bytes += inbound.bytes;
    cell.new = cell.new.saturating_add(new);
    c.max_pkts = c.max_pkts.max(cell.pkts);
    c.max_bytes = c.max_bytes.max(cell.bytes);
    c.max_new = c.max_new.max(cell.new);
}

impl Spread {
    /// The latest second moves on to `last`.
    #[cold]
    pub(crate) fn next_second(&mut self, last: u64) {
        self.prev = if last == self.cur.sec + 1 {
            self.cur
        } else {
            SecSpread::default()
        };
        self.cur = SecSpread {
            sec: last,
            ..SecSpread::default()
        };
        if self.direct.is_none() {
            self.addrs.clear();
        }
    }
}

/// The cell of `local` where it is not a made direct cell: the direct cells are made on first
/// use; other addresses are followed by the table while it has room (beyond it they are
/// counted, and `None` returned).
#[inline(never)]
pub(crate) fn other_cell<'a>(
    direct: Option<(u32, u32)>,
    cells: &'a mut Vec<Cell>,
    addrs: &'a mut HashMap<IpAddr, Cell>,
    cur: &mut SecSpread,
    local: IpAddr,
) -> Option<&'a mut Cell> {
    if let (Some((net, size)), IpAddr::V4(a)) = (direct, local) {
        let i = u32::from(a).wrapping_sub(net);
        if i < size {
            if cells.is_empty() {
                *cells = vec![Cell::default(); size as usize];
            }
            return Some(&mut cells[i as usize]);
        }
    }
    let room = addrs.len() < MAX_SPREAD;
    match addrs.entry(local) {
        hashbrown::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
        hashbrown::hash_map::Entry::Vacant(e) if room => Some(e.insert(Cell::default())),
        hashbrown::hash_map::Entry::Vacant(_) => {
            cur.distinct += 1;
            None
        }
    }
}

/// Carpet bombing in a second spread as `ss`: at least `min_addrs` addresses hit, and the
/// busiest one alone within the asset's limits `per_addr`. Returns the distinct addresses
/// and the busiest one's packets.
pub(crate) fn judge(ss: &SecSpread, per_addr: &Lim, min_addrs: u32) -> Option<(u32, u32)> {
    if ss.distinct < min_addrs {
        return None;
    }
    let within = u64::from(ss.max_pkts) <= per_addr.pkts
        && ss.max_bytes.saturating_mul(8) <= per_addr.bits
        && u64::from(ss.max_new) <= per_addr.new;
    within.then_some((ss.distinct, ss.max_pkts))
}

impl<const N: usize> AssetState<N> {
    /// Carpet bombing in second `sec`: many addresses hit, and the busiest one alone within
    /// the asset's limits. Returns the distinct addresses and the busiest one's packets.
    pub(crate) fn carpet(&self, cx: &Ctx, sec: u64) -> Option<(u32, u32)> {
        let sp = self.spread.as_deref()?;
        // The second itself, else a neighbour: a flow spanning two seconds puts its new flow
        // in the first and its spread in the last, and an attack's spread does not change
        // from one second to the next.
        let ss = [&sp.cur, &sp.prev]
            .into_iter()
            .filter(|x| x.distinct > 0)
            .min_by_key(|x| x.sec.abs_diff(sec))
            .filter(|x| x.sec.abs_diff(sec) <= 1)?;
        judge(ss, &self.lim, cx.s.carpet_min_addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(distinct: u32, max_pkts: u32) -> SecSpread {
        SecSpread {
            sec: 1,
            distinct,
            max_pkts,
            max_bytes: u64::from(max_pkts) * 100,
            max_new: 1,
        }
    }

    #[test]
    fn many_addresses_each_within_the_limit_are_carpet_bombing() {
        let per_addr = Lim {
            pkts: 1_000,
            bits: u64::MAX,
            new: u64::MAX,
        };
        assert_eq!(judge(&spread(200, 50), &per_addr, 16), Some((200, 50)));
        // Too few addresses, or one address alone over the limit: a plain flood.
        assert_eq!(judge(&spread(10, 50), &per_addr, 16), None);
        assert_eq!(judge(&spread(200, 5_000), &per_addr, 16), None);
    }
}
