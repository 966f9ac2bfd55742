//! Disclosure control: which cells of a set of linked tables may be
//! published so that no suppressed cell can be worked out from the others
//! (DESIGN §7). One rule for the kpi service and the gateway.
//!
//! The policy, in the words docs/kpi.md uses ("What a caller can and cannot
//! learn"):
//!
//! 1. A cell is **empty** when it has no observations: that is not a secret.
//! 2. A non-empty cell is withheld (**primary**) when it has fewer than `k`
//!    observations, or (unless `k` is 1, a hub's choice to publish every
//!    figure) when it is **degenerate**: one of its category checks
//!    fails (a share at 0% or 100%, an NPS without promoters, passives or
//!    detractors, a mean or quantile whose observations all have one value).
//!    A degenerate figure states the answer of every observation behind it,
//!    and so of every smaller group inside it.
//! 3. The caller can combine cells through **lines**: a parent cell (a total,
//!    or a longer period) and the children that add up to it (its groups, or
//!    its sub-periods). In every line whose parent is published, the hidden
//!    non-empty children must be none, or at least two whose sum (the part
//!    of the parent the caller cannot see) has at least `k` observations and
//!    is not degenerate itself. Otherwise the published child with the fewest
//!    observations is withheld too (**secondary**), and so on; a child that
//!    is the only non-empty one of some line equals that line's parent, so
//!    it is chosen last, and only where that parent may be withheld with
//!    it. In every line whose parent is hidden, at least one non-empty child
//!    is hidden, or the parent would be their sum.
//! 4. Lines are revisited until none changes (withholding only ever grows, so
//!    this ends). When a line cannot be mended by its children, its parent is
//!    withheld if the line allows it; otherwise the line is reported as
//!    unprotected.
//!
//! 5. Lines can cross (a unit's month is in the unit's line and in the
//!    month's), and sums and differences across several lines can still
//!    prove that a withheld cell has no observation in some category. So
//!    when the table's finest pieces (atoms) are given, the decision is
//!    **audited**: atoms held by exactly the same published cells form a
//!    class that no combination of published figures can split, and a
//!    withheld cell that lacks a category (no dissatisfied answers, say)
//!    must touch a class that has it. Where one does not, the fewest (then
//!    smallest) published cells that set one of its atoms apart from an
//!    atom with that category are withheld too, and rules 3 to 5 run again.
//!    This is the bound a linear program would find, not a heuristic: with
//!    such a class the cell's count in the category can be as large as the
//!    class's.
//!
//! The result depends only on the cells and lines given, in their order, so
//! two queries that build the same table publish the same cells.

use std::collections::BTreeMap;

/// Counts of observations by key (a value, or a block of a partition).
pub type Histogram = BTreeMap<i64, u64>;

/// What is known of a cell: its number of observations and, per check of the
/// policy, a histogram the check reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// Observations.
    pub n: u64,
    /// One histogram per check of the policy, in the policy's order.
    pub parts: Vec<Histogram>,
}

impl Content {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Content) {
        self.n += other.n;
        if self.parts.len() < other.parts.len() {
            self.parts.resize(other.parts.len(), Histogram::new());
        }
        for (dst, src) in self.parts.iter_mut().zip(&other.parts) {
            for (key, count) in src {
                *dst.entry(*key).or_default() += count;
            }
        }
    }
}

/// A check of a cell's categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Keys 0..blocks are the blocks of a partition (e.g. satisfied or not):
    /// each must hold some observations but not all of them.
    EachBlock(i64),
    /// At least two different keys (values) must occur, so a mean or a
    /// quantile is not the one value every observation has.
    Varied,
}

/// The disclosure policy of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The least number of observations of a published figure.
    pub k: u64,
    /// The category checks, one per part of each cell's content.
    pub checks: Vec<Check>,
}

impl Policy {
    /// Whether `c` states something about every one of its observations.
    pub fn degenerate(&self, c: &Content) -> bool {
        // k = 1 is a hub's choice to publish every figure: no control.
        if c.n == 0 || self.k <= 1 {
            return false;
        }
        let empty = Histogram::new();
        self.checks.iter().enumerate().any(|(i, check)| {
            let h = c.parts.get(i).unwrap_or(&empty);
            match *check {
                Check::EachBlock(blocks) => (0..blocks).any(|b| {
                    let x = h.get(&b).copied().unwrap_or(0);
                    x == 0 || x >= c.n
                }),
                Check::Varied => h.values().filter(|&&x| x > 0).count() < 2,
            }
        })
    }

    /// Whether a cell may be published on its own (rule 2).
    pub fn publishable(&self, c: &Content) -> bool {
        c.n >= self.k.max(1) && !self.degenerate(c)
    }
}

/// The fate of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No observations: shown as empty.
    Empty,
    /// Published.
    Published,
    /// Withheld: too few observations, or degenerate.
    Primary,
    /// Withheld so that a primary cell cannot be worked out.
    Secondary,
}

impl Status {
    /// Whether the cell is withheld.
    pub fn hidden(self) -> bool {
        matches!(self, Status::Primary | Status::Secondary)
    }
}

/// A parent cell and the children that add up to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The parent's index.
    pub parent: usize,
    /// The children's indexes.
    pub children: Vec<usize>,
    /// Whether the parent may be withheld when the children cannot protect
    /// the line. A table that other tables extend (finer periods, more
    /// dimensions) says no for the lines into the extension, so that the
    /// extension never changes what the base publishes.
    pub may_hide_parent: bool,
}

/// What `protect` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// One status per cell.
    pub status: Vec<Status>,
    /// Lines that could not be protected (indexes into the lines given).
    pub unprotected: Vec<usize>,
}

/// One of the finest pieces a table is made of (a unit's channel's service
/// on one day, say): its content and the cells that add it up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Atom {
    /// Its observations.
    pub content: Content,
    /// The cells holding it (indexes into the table's cells; others are
    /// ignored).
    pub cells: Vec<usize>,
}

/// Applies the policy to a table of `cells` linked by `lines`. The first
/// `preset.len()` cells keep the statuses given (a table decided before,
/// which this one extends); the lines should only have them as parents.
///
/// With `atoms` (the pieces every cell adds up), the lines' decision is then
/// audited against bounds (rule 5 of the module's policy): whatever the
/// caller combines, a withheld figure must not be pinned at 0%, at 100% or
/// at one value, and the audit withholds more until none is.
pub fn protect(
    cells: &[Content],
    lines: &[Line],
    policy: &Policy,
    preset: &[Status],
    atoms: &[Atom],
) -> Protected {
    protect_using(cells, lines, policy, preset, atoms, cheapest_apart)
}

/// [`protect`] with the audit's search for the cheapest cells that set a
/// pinned cell's atom apart given as `search` (the test module compares
/// the search by classes with one over every pair of atoms).
fn protect_using(
    cells: &[Content],
    lines: &[Line],
    policy: &Policy,
    preset: &[Status],
    atoms: &[Atom],
    search: Search,
) -> Protected {
    let fixed = preset.len().min(cells.len());
    let mut status: Vec<Status> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < fixed {
                preset[i]
            } else if c.n == 0 {
                Status::Empty
            } else if policy.publishable(c) {
                Status::Published
            } else {
                Status::Primary
            }
        })
        .collect();
    // A child that is the only non-empty one of a line equals its parent:
    // it is a complement of last resort, and only when every such parent
    // may be withheld with it.
    let mut sole = vec![false; cells.len()];
    let mut sole_ok = vec![true; cells.len()];
    for line in lines {
        let mut non_empty = line.children.iter().filter(|&&c| cells[c].n > 0);
        if let (Some(&only), None) = (non_empty.next(), non_empty.next()) {
            sole[only] = true;
            sole_ok[only] &= line.may_hide_parent && line.parent >= fixed;
        }
    }
    let mut unprotected = Vec::new();
    loop {
        settle(
            cells,
            lines,
            policy,
            fixed,
            (&sole, &sole_ok),
            &mut status,
            &mut unprotected,
        );
        if atoms.is_empty() || policy.k <= 1 {
            break;
        }
        let more = audit(cells, policy, fixed, atoms, &status, search);
        if more.is_empty() {
            break;
        }
        for c in more {
            status[c] = Status::Secondary;
        }
    }
    Protected {
        status,
        unprotected,
    }
}

/// Rule 3: revisits the lines until none changes.
fn settle(
    cells: &[Content],
    lines: &[Line],
    policy: &Policy,
    fixed: usize,
    (sole, sole_ok): (&[bool], &[bool]),
    status: &mut [Status],
    unprotected: &mut Vec<usize>,
) {
    loop {
        let mut changed = false;
        for (li, line) in lines.iter().enumerate() {
            let non_empty: Vec<usize> = line
                .children
                .iter()
                .copied()
                .filter(|&c| cells[c].n > 0)
                .collect();
            if non_empty.is_empty() {
                continue;
            }
            let hidden: Vec<usize> = non_empty
                .iter()
                .copied()
                .filter(|&c| status[c].hidden())
                .collect();
            let parent_hidden = status[line.parent].hidden();
            let safe = if parent_hidden {
                !hidden.is_empty()
            } else if hidden.is_empty() {
                true
            } else {
                let mut rest = Content::default();
                for &c in &hidden {
                    rest.add(&cells[c]);
                }
                hidden.len() >= 2 && policy.publishable(&rest)
            };
            if safe {
                continue;
            }
            let smallest = |eligible: &dyn Fn(usize) -> bool| {
                non_empty
                    .iter()
                    .copied()
                    .filter(|&c| c >= fixed && status[c] == Status::Published && eligible(c))
                    .min_by_key(|&c| (cells[c].n, c))
            };
            let pick = smallest(&|c| !sole[c])
                .or_else(|| smallest(&|c| sole_ok[c]))
                .or_else(|| parent_hidden.then(|| smallest(&|_| true)).flatten());
            match pick {
                Some(c) => status[c] = Status::Secondary,
                None if !parent_hidden && line.may_hide_parent && line.parent >= fixed => {
                    status[line.parent] = Status::Secondary
                }
                None => {
                    if !unprotected.contains(&li) {
                        unprotected.push(li);
                    }
                    continue;
                }
            }
            changed = true;
        }
        if !changed {
            break;
        }
    }
}

/// What a withheld cell needs so that no bound pins it: some observation
/// the caller cannot tell apart from its own with a key of part `.0` that
/// the cell lacks (`Block`: key `.1`; `Other`: any key but `.1`).
#[derive(Debug, Clone, Copy)]
enum Need {
    Block(usize, i64),
    Other(usize, i64),
}

impl Need {
    fn met_by(self, c: &Content) -> bool {
        match self {
            Need::Block(i, b) => c
                .parts
                .get(i)
                .is_some_and(|h| h.get(&b).copied().unwrap_or(0) > 0),
            Need::Other(i, v) => c
                .parts
                .get(i)
                .is_some_and(|h| h.iter().any(|(k, x)| *k != v && *x > 0)),
        }
    }
}

/// What `c` lacks: the keys a bound could prove absent from it.
fn needs(policy: &Policy, c: &Content) -> Vec<Need> {
    let empty = Histogram::new();
    let mut out = Vec::new();
    for (i, check) in policy.checks.iter().enumerate() {
        let h = c.parts.get(i).unwrap_or(&empty);
        match *check {
            Check::EachBlock(blocks) => {
                for b in 0..blocks {
                    if h.get(&b).copied().unwrap_or(0) == 0 {
                        out.push(Need::Block(i, b));
                    }
                }
            }
            Check::Varied => {
                let mut keys = h.iter().filter(|(_, x)| **x > 0).map(|(k, _)| *k);
                if let (Some(v), None) = (keys.next(), keys.next()) {
                    out.push(Need::Other(i, v));
                }
            }
        }
    }
    out
}

/// Rule 5, the audit. Any figure a caller can work out from the published
/// ones (sums and differences, at any depth) is a sum of atoms with a
/// weight that is the same for every atom held by the same published
/// cells: atoms alike in that way form a *class*, and no combination tells
/// the atoms of a class apart. A withheld cell with no observations in some
/// category (no dissatisfied answers, say) is therefore pinned there only
/// if every class it touches is empty in that category too; then even the
/// best linear-programming bound proves the category empty. Otherwise the
/// upper bound is at least the class's observations in it.
///
/// Returns the published cells to withhold so that one failing cell
/// shares a class with an observation in the category it lacks: the
/// cheapest set of cells that tell one of its atoms apart from such an
/// atom (empty when nothing fails, or nothing can be withheld).
fn audit(
    cells: &[Content],
    policy: &Policy,
    fixed: usize,
    atoms: &[Atom],
    status: &[Status],
    search: Search,
) -> Vec<usize> {
    // Each atom's published cells (sorted), and its class.
    let sig: Vec<Vec<usize>> = atoms
        .iter()
        .map(|a| {
            let mut s: Vec<usize> = a
                .cells
                .iter()
                .copied()
                .filter(|&c| c < cells.len() && status[c] == Status::Published)
                .collect();
            s.sort_unstable();
            s.dedup();
            s
        })
        .collect();
    let mut class_of: BTreeMap<&[usize], usize> = BTreeMap::new();
    let mut class: Vec<usize> = Vec::with_capacity(atoms.len());
    let mut class_content: Vec<Content> = Vec::new();
    for (a, s) in sig.iter().enumerate() {
        let next = class_of.len();
        let id = *class_of.entry(s.as_slice()).or_insert(next);
        if id == class_content.len() {
            class_content.push(Content::default());
        }
        class_content[id].add(&atoms[a].content);
        class.push(id);
    }
    // The atoms of each withheld, non-empty cell.
    let mut held: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (a, atom) in atoms.iter().enumerate() {
        for &c in &atom.cells {
            if c < cells.len() && status[c].hidden() && cells[c].n > 0 {
                held.entry(c).or_default().push(a);
            }
        }
    }
    for (&c, inside) in &held {
        for need in needs(policy, &cells[c]) {
            if inside
                .iter()
                .any(|&a| need.met_by(&class_content[class[a]]))
            {
                continue;
            }
            // Pinned. Merge one of its atoms with an atom that has the
            // category, at the least cost.
            let pinned = Pinned {
                cells,
                fixed,
                atoms,
                sig: &sig,
                class: &class,
                inside,
                need,
            };
            if let Some(apart) = search(&pinned)
                && !apart.is_empty()
            {
                return apart;
            }
        }
    }
    Vec::new()
}

/// A withheld cell the audit found pinned, with what the search for the
/// cells that set it apart reads.
struct Pinned<'a> {
    cells: &'a [Content],
    fixed: usize,
    atoms: &'a [Atom],
    /// Each atom's published cells, sorted.
    sig: &'a [Vec<usize>],
    /// Each atom's class (atoms with the same `sig`).
    class: &'a [usize],
    /// The pinned cell's atoms.
    inside: &'a [usize],
    /// The category it lacks.
    need: Need,
}

/// The audit's search: the published cells whose withholding merges one of
/// the pinned cell's atoms with an atom that has the category, or None.
type Search = fn(&Pinned<'_>) -> Option<Vec<usize>>;

/// The cells that set atom `a` apart from atom `x` (the symmetric
/// difference of their signatures), their count and observations; None when
/// one of them is fixed (decided by a table this one extends).
fn apart_cost(p: &Pinned<'_>, a: usize, x: usize) -> Option<(usize, u64)> {
    let apart = symmetric_difference(&p.sig[a], &p.sig[x]);
    if apart.iter().any(|&c| c < p.fixed) {
        return None;
    }
    Some((apart.len(), apart.iter().map(|&c| p.cells[c].n).sum()))
}

/// The search over classes: the fewest, then smallest, cells that set an
/// atom of the pinned cell apart from an atom with the category, ties going
/// to the first atom with the category (in the atoms' order), then to the
/// first of the pinned cell's atoms (in `inside`'s order).
///
/// Atoms of one class share their signature, so the cost of a pair depends
/// only on the pair's classes: each pair of classes is costed once, at its
/// first pair of atoms in that order. The result is the search over every
/// pair of atoms (the tests compare the two), at the cost of
/// classes × classes instead of atoms × atoms.
fn cheapest_apart(p: &Pinned<'_>) -> Option<Vec<usize>> {
    let classes = p.class.iter().copied().max().map_or(0, |m| m + 1);
    // The first atom with the category of each class.
    let mut first_with: Vec<Option<usize>> = vec![None; classes];
    let mut with_order = Vec::new();
    for (x, other) in p.atoms.iter().enumerate() {
        let cx = p.class[x];
        if first_with[cx].is_none() && p.need.met_by(&other.content) {
            first_with[cx] = Some(x);
            with_order.push(x);
        }
    }
    // The first of the pinned cell's atoms in each class, in order.
    let mut seen = vec![false; classes];
    let mut inside_order = Vec::new();
    for &a in p.inside {
        if !std::mem::replace(&mut seen[p.class[a]], true) {
            inside_order.push(a);
        }
    }
    let mut best: Option<((usize, u64), usize, usize)> = None;
    for &x in &with_order {
        for &a in &inside_order {
            let Some(cost) = apart_cost(p, a, x) else {
                continue;
            };
            if best.as_ref().is_none_or(|(b, _, _)| cost < *b) {
                best = Some((cost, a, x));
            }
        }
    }
    best.map(|(_, a, x)| symmetric_difference(&p.sig[a], &p.sig[x]))
}

/// The members of exactly one of two sorted lists.
fn symmetric_difference(a: &[usize], b: &[usize]) -> Vec<usize> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                out.push(*x);
                i += 1;
            }
            (Some(x), None) => {
                out.push(*x);
                i += 1;
            }
            (_, Some(y)) => {
                out.push(*y);
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Whether the total of a row of figures may be published beside them: only
/// when none of its non-empty figures is withheld, or the withheld ones are
/// at least two, their sum `hidden` is publishable (and every withheld
/// count is known to the caller of this function). The gateway's benchmark
/// uses it for the total of a peer group.
pub fn total_publishable(withheld: usize, hidden: Option<&Content>, policy: &Policy) -> bool {
    match (withheld, hidden) {
        (0, _) => true,
        (1, _) | (_, None) => false,
        (_, Some(h)) => policy.publishable(h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A share: part 0 is satisfied (block 1) or not (block 0).
    fn share(n: u64, yes: u64) -> Content {
        Content {
            n,
            parts: vec![[(0, n - yes), (1, yes)].into_iter().collect()],
        }
    }

    fn policy() -> Policy {
        Policy {
            k: 10,
            checks: vec![Check::EachBlock(2)],
        }
    }

    fn line(parent: usize, children: &[usize]) -> Line {
        Line {
            parent,
            children: children.to_vec(),
            may_hide_parent: true,
        }
    }

    #[test]
    fn degenerate_figures_are_withheld() {
        let p = policy();
        assert!(p.degenerate(&share(30, 30)));
        assert!(p.degenerate(&share(30, 0)));
        assert!(!p.degenerate(&share(30, 29)));
        assert!(!p.degenerate(&share(0, 0)));
        let mean = Policy {
            k: 10,
            checks: vec![Check::Varied],
        };
        let same = Content {
            n: 12,
            parts: vec![[(4, 12)].into_iter().collect()],
        };
        assert!(mean.degenerate(&same));
    }

    /// The case: total 45/53, north 27/35, east 6 (primary): the
    /// smallest other group, south 12/12, would leave 18 of 18 hidden, both
    /// cells pinned at 100%. South is 12 of 12 itself, so it is primary
    /// too; the hidden remainder is then all satisfied, and north must go.
    #[test]
    fn an_all_or_nothing_remainder_takes_more_cells() {
        let cells = vec![share(53, 45), share(35, 27), share(6, 6), share(12, 12)];
        let out = protect(&cells, &[line(0, &[1, 2, 3])], &policy(), &[], &[]);
        assert_eq!(
            out.status,
            vec![
                Status::Published,
                Status::Secondary,
                Status::Primary,
                Status::Primary
            ]
        );
        assert!(out.unprotected.is_empty());
    }

    #[test]
    fn one_small_cell_takes_the_smallest_partner_with_a_mixed_remainder() {
        let cells = vec![
            share(100, 60),
            share(50, 30),
            share(4, 2),
            share(30, 20),
            share(16, 8),
        ];
        let out = protect(&cells, &[line(0, &[1, 2, 3, 4])], &policy(), &[], &[]);
        assert_eq!(
            out.status,
            vec![
                Status::Published,
                Status::Published,
                Status::Primary,
                Status::Published,
                Status::Secondary
            ]
        );
    }

    /// A 2×2 table with margins: one small interior cell needs a rectangle.
    #[test]
    fn two_dimensions_hide_a_rectangle() {
        // 0: total; 1, 2: rows; 3, 4: columns; 5..8: (r1c1, r1c2, r2c1, r2c2).
        let cells = vec![
            share(100, 50),
            share(40, 20),
            share(60, 30),
            share(45, 22),
            share(55, 28),
            share(5, 2),
            share(35, 18),
            share(40, 20),
            share(20, 10),
        ];
        let lines = vec![
            line(0, &[1, 2]),
            line(0, &[3, 4]),
            line(1, &[5, 6]),
            line(2, &[7, 8]),
            line(3, &[5, 7]),
            line(4, &[6, 8]),
        ];
        let out = protect(&cells, &lines, &policy(), &[], &[]);
        for i in 5..9 {
            assert!(out.status[i].hidden(), "{i}");
        }
        for i in 0..5 {
            assert_eq!(out.status[i], Status::Published, "{i}");
        }
    }

    #[test]
    fn a_hidden_parent_is_not_the_sum_of_published_children() {
        // 0 = 1 + 2 (a quarter and its months), 0 hidden by its own line.
        let cells = vec![share(30, 15), share(20, 10), share(10, 5), share(5, 2)];
        let lines = vec![line(3, &[]), line(0, &[1, 2])];
        let mut status = protect(&cells, &lines, &policy(), &[], &[]).status;
        assert_eq!(status[0], Status::Published);
        let degenerate = vec![share(30, 30), share(20, 19), share(10, 9)];
        status = protect(&degenerate, &[line(0, &[1, 2])], &policy(), &[], &[]).status;
        assert_eq!(status[0], Status::Primary);
        assert!(status[1].hidden() || status[2].hidden());
    }

    /// Every table of atoms' counts (each at most `max`) that gives every
    /// published cell its count: what an attacker with unlimited
    /// arithmetic cannot rule out.
    fn consistent(
        atoms: &[Vec<usize>],
        cells: usize,
        published: &[(usize, u64)],
        max: u64,
    ) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        let mut x = vec![0u64; atoms.len()];
        loop {
            let mut sums = vec![0u64; cells];
            for (a, holders) in atoms.iter().enumerate() {
                for &c in holders {
                    sums[c] += x[a];
                }
            }
            if published.iter().all(|&(c, v)| sums[c] == v) {
                out.push(x.clone());
            }
            let mut i = 0;
            loop {
                if i == x.len() {
                    return out;
                }
                x[i] += 1;
                if x[i] <= max {
                    break;
                }
                x[i] = 0;
                i += 1;
            }
        }
    }

    /// Two crossed lines: channels within a month, and days within it. The
    /// line rule alone leaves a withheld cell whose dissatisfied answers a
    /// bound proves to be none; the audit withholds more, and then no
    /// consistent table pins any withheld cell.
    #[test]
    fn crossed_lines_are_audited_against_bounds() {
        // 0 month; 1, 2 channels; 3, 4 days; 5..8 (ch1 d1, ch1 d2, ch2 d1,
        // ch2 d2). All the dissatisfied answers are in ch1 on day 1.
        let interior = [(6u64, 4u64), (3, 3), (4, 4), (3, 3)];
        let holders: Vec<Vec<usize>> = vec![
            vec![0, 1, 3, 5],
            vec![0, 1, 4, 6],
            vec![0, 2, 3, 7],
            vec![0, 2, 4, 8],
        ];
        let mut cells = vec![Content::default(); 9];
        for (a, h) in holders.iter().enumerate() {
            let (n, yes) = interior[a];
            for &c in h {
                cells[c].add(&share(n, yes));
            }
        }
        let atoms: Vec<Atom> = holders
            .iter()
            .zip(interior)
            .map(|(h, (n, yes))| Atom {
                content: share(n, yes),
                cells: h.clone(),
            })
            .collect();
        let lines = vec![
            line(0, &[1, 2]),
            line(0, &[3, 4]),
            line(1, &[5, 6]),
            line(2, &[7, 8]),
            line(3, &[5, 7]),
            line(4, &[6, 8]),
        ];
        let p = Policy {
            k: 3,
            checks: vec![Check::EachBlock(2)],
        };
        let pinned = |status: &[Status]| -> Vec<usize> {
            // Dissatisfied answers per atom: at most 2 in all.
            let published: Vec<(usize, u64)> = (0..9)
                .filter(|&c| status[c] == Status::Published)
                .map(|c| (c, cells[c].parts[0][&0]))
                .collect();
            let tables = consistent(&holders, 9, &published, 2);
            (0..9)
                .filter(|&c| status[c].hidden())
                .filter(|&c| {
                    tables.iter().all(|t| {
                        holders
                            .iter()
                            .enumerate()
                            .filter(|(_, h)| h.contains(&c))
                            .all(|(a, _)| t[a] == 0)
                    })
                })
                .collect()
        };
        let lines_only = protect(&cells, &lines, &p, &[], &[]);
        assert!(
            !pinned(&lines_only.status).is_empty(),
            "the line rule alone pins a cell: {:?}",
            lines_only.status
        );
        let audited = protect(&cells, &lines, &p, &[], &atoms);
        assert_eq!(
            pinned(&audited.status),
            Vec::<usize>::new(),
            "{:?}",
            audited.status
        );
        // The audit only adds withheld cells.
        for c in 0..9 {
            assert!(!lines_only.status[c].hidden() || audited.status[c].hidden());
        }
        assert_eq!(audited.status[0], Status::Published);
    }

    #[test]
    fn a_total_beside_withheld_figures() {
        let p = policy();
        assert!(total_publishable(0, None, &p));
        assert!(!total_publishable(1, Some(&share(40, 20)), &p));
        assert!(!total_publishable(2, None, &p));
        assert!(total_publishable(2, Some(&share(40, 20)), &p));
        assert!(!total_publishable(2, Some(&share(40, 40)), &p));
    }

    /// The search as first written: every pair of atoms, each costed.
    fn every_pair(p: &Pinned<'_>) -> Option<Vec<usize>> {
        let mut best: Option<(usize, u64, Vec<usize>)> = None;
        for (x, other) in p.atoms.iter().enumerate() {
            if !p.need.met_by(&other.content) {
                continue;
            }
            for &a in p.inside {
                let apart = symmetric_difference(&p.sig[a], &p.sig[x]);
                if apart.iter().any(|&c| c < p.fixed) {
                    continue;
                }
                let weight: u64 = apart.iter().map(|&c| p.cells[c].n).sum();
                if best
                    .as_ref()
                    .is_none_or(|(len, w, _)| (apart.len(), weight) < (*len, *w))
                {
                    best = Some((apart.len(), weight, apart));
                }
            }
        }
        SEARCHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        best.map(|(_, _, apart)| apart)
    }

    static SEARCHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// A small deterministic generator for the random tables.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// A table of groups × periods with both margins and a grand total,
    /// made of a few atoms per interior cell, each with a random share;
    /// some interior cells of an earlier table are fixed.
    fn random_table(rng: &mut Rng) -> (Vec<Content>, Vec<Line>, Vec<Status>, Vec<Atom>, Policy) {
        let groups = 2 + rng.below(5) as usize;
        let periods = 2 + rng.below(4) as usize;
        // 0: total; 1..=groups: group totals; then period totals; then interior.
        let group = |g: usize| 1 + g;
        let period = |t: usize| 1 + groups + t;
        let inner = |g: usize, t: usize| 1 + groups + periods + g * periods + t;
        let count = 1 + groups + periods + groups * periods;
        let mut atoms = Vec::new();
        for g in 0..groups {
            for t in 0..periods {
                for _ in 0..1 + rng.below(4) {
                    let n = rng.below(16);
                    let yes = if rng.below(3) == 0 {
                        [0, n][rng.below(2) as usize]
                    } else {
                        rng.below(n + 1)
                    };
                    atoms.push(Atom {
                        content: share(n, yes),
                        cells: vec![inner(g, t), group(g), period(t), 0],
                    });
                }
            }
        }
        let mut cells = vec![Content::default(); count];
        for a in &atoms {
            for &c in &a.cells {
                cells[c].add(&a.content);
            }
        }
        let mut lines = vec![
            line(0, &(0..groups).map(group).collect::<Vec<_>>()),
            line(0, &(0..periods).map(period).collect::<Vec<_>>()),
        ];
        for g in 0..groups {
            lines.push(line(
                group(g),
                &(0..periods).map(|t| inner(g, t)).collect::<Vec<_>>(),
            ));
        }
        for t in 0..periods {
            lines.push(line(
                period(t),
                &(0..groups).map(|g| inner(g, t)).collect::<Vec<_>>(),
            ));
        }
        // Sometimes the totals were decided before (an extended table).
        let preset = match rng.below(3) {
            0 => vec![Status::Published],
            _ => Vec::new(),
        };
        let policy = Policy {
            k: 3 + rng.below(8),
            checks: vec![Check::EachBlock(2)],
        };
        (cells, lines, preset, atoms, policy)
    }

    /// The search by classes decides every table as the search over every
    /// pair of atoms does (same statuses, same unprotected lines), over
    /// random tables many of which the audit has to mend.
    #[test]
    fn the_search_by_classes_decides_as_every_pair_does() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let before = SEARCHED.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..3000 {
            let (cells, lines, preset, atoms, policy) = random_table(&mut rng);
            let fast = protect_using(&cells, &lines, &policy, &preset, &atoms, cheapest_apart);
            let slow = protect_using(&cells, &lines, &policy, &preset, &atoms, every_pair);
            assert_eq!(fast, slow, "cells {cells:?}");
        }
        let searched = SEARCHED.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(searched > 100, "the audit searched only {searched} times");
    }
}
