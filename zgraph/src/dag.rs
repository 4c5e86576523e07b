//! Cycle detection over the edges of a graph, in time linear in its size.
//!
//! The nodes are `0..n`; the edges come in source order. [`cycles`] finds
//! the strongly connected components (Tarjan's algorithm, iterative so a
//! long chain cannot overflow the stack) and names one cycle in each
//! component that has more than one node: it closes at the component's
//! *last* edge in source order (every edge inside a component lies on a
//! cycle), and runs the shortest way round, found by a breadth-first search
//! that stays inside the component. Self-edges are the caller's to report.

use std::collections::VecDeque;

/// One cycle: the edge (an index into the caller's list) that closes it,
/// and the nodes `to -> … -> from` of the shortest way back; the cycle is
/// these nodes followed by `to` again.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cycle {
    pub(crate) edge: usize,
    pub(crate) path: Vec<usize>,
}

/// Every component's cycle, by closing edge in source order, and the number
/// of steps taken (each one a node or an edge visited), for tests to bound.
pub(crate) fn cycles(n: usize, edges: &[(usize, usize)]) -> (Vec<Cycle>, usize) {
    let adjacency = Adjacency::new(n, edges);
    let mut steps = 0;
    let component = components(&adjacency, &mut steps);
    let mut sizes = vec![0usize; n];
    for &c in &component {
        sizes[c] += 1;
    }
    // The last edge inside each component with a cycle.
    let mut closing: Vec<Option<usize>> = vec![None; n];
    for (i, &(from, to)) in edges.iter().enumerate() {
        steps += 1;
        let c = component[from];
        if from != to && c == component[to] && sizes[c] > 1 {
            closing[c] = Some(i);
        }
    }
    let mut closing: Vec<usize> = closing.into_iter().flatten().collect();
    closing.sort_unstable();
    let mut parent = vec![usize::MAX; n];
    let found = closing
        .into_iter()
        .map(|edge| {
            let (from, to) = edges[edge];
            let path = shortest_path(&adjacency, &component, &mut parent, to, from, &mut steps);
            Cycle { edge, path }
        })
        .collect();
    (found, steps)
}

/// Outgoing edges of every node, in one array (compressed sparse rows).
struct Adjacency {
    starts: Vec<usize>,
    targets: Vec<usize>,
}

impl Adjacency {
    fn new(n: usize, edges: &[(usize, usize)]) -> Self {
        let mut starts = vec![0usize; n + 1];
        for &(from, _) in edges {
            starts[from + 1] += 1;
        }
        for i in 0..n {
            starts[i + 1] += starts[i];
        }
        let mut next = starts.clone();
        let mut targets = vec![0usize; edges.len()];
        for &(from, to) in edges {
            targets[next[from]] = to;
            next[from] += 1;
        }
        Self { starts, targets }
    }

    fn out(&self, node: usize) -> &[usize] {
        &self.targets[self.starts[node]..self.starts[node + 1]]
    }

    fn len(&self) -> usize {
        self.starts.len() - 1
    }
}

/// Tarjan's strongly connected components; returns each node's component.
fn components(graph: &Adjacency, steps: &mut usize) -> Vec<usize> {
    const NONE: usize = usize::MAX;
    let n = graph.len();
    let mut index = vec![NONE; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut component = vec![NONE; n];
    let mut stack = Vec::new();
    // The depth-first path: (node, how many of its edges were followed).
    let mut path: Vec<(usize, usize)> = Vec::new();
    let mut next_index = 0;
    let mut next_component = 0;
    for root in 0..n {
        if index[root] != NONE {
            continue;
        }
        path.push((root, 0));
        while let Some(&mut (node, ref mut followed)) = path.last_mut() {
            *steps += 1;
            if *followed == 0 && index[node] == NONE {
                index[node] = next_index;
                low[node] = next_index;
                next_index += 1;
                stack.push(node);
                on_stack[node] = true;
            }
            if let Some(&next) = graph.out(node).get(*followed) {
                *followed += 1;
                if index[next] == NONE {
                    path.push((next, 0));
                } else if on_stack[next] {
                    low[node] = low[node].min(index[next]);
                }
                continue;
            }
            path.pop();
            if let Some(&(up, _)) = path.last() {
                low[up] = low[up].min(low[node]);
            }
            if low[node] == index[node] {
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component[member] = next_component;
                    if member == node {
                        break;
                    }
                }
                next_component += 1;
            }
        }
    }
    component
}

/// Breadth-first shortest path `start -> … -> goal` within `start`'s
/// component (they share one). `parent` is scratch space, all `usize::MAX`
/// on entry and on return.
fn shortest_path(
    graph: &Adjacency,
    component: &[usize],
    parent: &mut [usize],
    start: usize,
    goal: usize,
    steps: &mut usize,
) -> Vec<usize> {
    let c = component[start];
    let mut seen = vec![start];
    parent[start] = start;
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        *steps += 1;
        if node == goal {
            break;
        }
        for &next in graph.out(node) {
            *steps += 1;
            if component[next] == c && parent[next] == usize::MAX {
                parent[next] = node;
                seen.push(next);
                queue.push_back(next);
            }
        }
    }
    let mut path = vec![goal];
    let mut at = goal;
    while at != start {
        at = parent[at];
        path.push(at);
    }
    path.reverse();
    for node in seen {
        parent[node] = usize::MAX;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triangle_is_named_from_its_last_edge() {
        let (found, _) = cycles(3, &[(0, 1), (1, 2), (2, 0)]);
        assert_eq!(
            found,
            vec![Cycle {
                edge: 2,
                path: vec![0, 1, 2]
            }]
        );
    }

    #[test]
    fn a_dag_has_no_cycle() {
        let (found, _) = cycles(4, &[(0, 1), (0, 2), (1, 3), (2, 3)]);
        assert!(found.is_empty());
    }

    #[test]
    fn each_component_gets_one_cycle_the_shortest_way_round() {
        // Component {0,1,2,3} (0->1->2->3->0 and the shortcut 1->3) and
        // component {4,5}; 6 hangs off both.
        let edges = [
            (0, 1),
            (1, 2),
            (2, 3),
            (4, 5),
            (3, 0),
            (1, 3),
            (5, 4),
            (3, 6),
            (5, 6),
        ];
        let (found, _) = cycles(7, &edges);
        assert_eq!(
            found,
            vec![
                Cycle {
                    edge: 5,
                    path: vec![3, 0, 1]
                },
                Cycle {
                    edge: 6,
                    path: vec![4, 5]
                },
            ]
        );
    }

    /// The chain `0 -> 1 -> … -> n` with its edges listed last to first took
    /// quadratic work before (one search per edge); now the work is a small
    /// multiple of nodes plus edges, with or without a cycle closing it.
    #[test]
    fn a_long_chain_listed_in_reverse_costs_linear_work() {
        let n = 100_000;
        let mut edges: Vec<(usize, usize)> = (0..n).rev().map(|i| (i, i + 1)).collect();
        let (found, steps) = cycles(n + 1, &edges);
        assert!(found.is_empty());
        assert!(steps <= 4 * (2 * n + 1), "{steps} steps for {n} edges");

        edges.push((n, 0));
        let (found, steps) = cycles(n + 1, &edges);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].edge, n);
        assert_eq!(found[0].path, (0..=n).collect::<Vec<_>>());
        assert!(
            steps <= 6 * (2 * n + 2),
            "{steps} steps for {} edges",
            n + 1
        );
    }
}
