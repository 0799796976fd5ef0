use std::collections::VecDeque;

use super::*;

/// Finishes one command of `id` and returns what the scheduler admitted in its place.
fn finish(d: &mut Drr<u32>, id: FlowId) -> Vec<(FlowId, u32)> {
    d.done(id)
}

#[test]
fn a_lone_flow_is_admitted_at_once_however_deep() {
    let mut d = Drr::new(4);
    let a = d.add(1);
    for i in 0..100 {
        assert_eq!(d.offer(a, i), Offer::Admitted(i), "command {i}");
    }
    assert_eq!((d.inflight(), d.queued()), (100, 0));
}

/// A store that finishes commands in the order they started: runs `completions` of them and
/// counts the admissions of flow `a` and of the others.
fn serve(d: &mut Drr<u32>, running: &mut VecDeque<FlowId>, a: FlowId, n: usize) -> (u32, u32) {
    let mut counts = (0, 0);
    for _ in 0..n {
        let done = running.pop_front().expect("something runs");
        for (flow, _) in d.done(done) {
            running.push_back(flow);
            if flow == a {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    counts
}

/// Offers `n` commands of `flow`, the admitted ones joining `running`.
fn offer_many(d: &mut Drr<u32>, running: &mut VecDeque<FlowId>, flow: FlowId, n: u32) {
    for i in 0..n {
        if let Offer::Admitted(_) = d.offer(flow, i) {
            running.push_back(flow);
        }
    }
}

#[test]
fn weights_split_the_admissions() {
    let mut d = Drr::new(8);
    let heavy = d.add(3);
    let light = d.add(1);
    let mut running = VecDeque::new();
    // The light flow is busy first, so the heavy one is never alone on the ring.
    offer_many(&mut d, &mut running, light, 1);
    offer_many(&mut d, &mut running, heavy, 2000);
    offer_many(&mut d, &mut running, light, 1999);
    assert_eq!(d.inflight(), running.len() as u32);
    let (h, l) = serve(&mut d, &mut running, heavy, 800);
    let ratio = f64::from(h) / f64::from(l);
    assert!((2.5..=3.5).contains(&ratio), "3:1 by weight: {h} and {l}");
}

#[test]
fn a_deep_flow_cannot_starve_a_light_one() {
    let mut d = Drr::new(2);
    let deep = d.add(1);
    let light = d.add(1);
    let blocker = d.add(1);
    let mut running = VecDeque::new();
    offer_many(&mut d, &mut running, blocker, 1);
    offer_many(&mut d, &mut running, deep, 1000);
    assert!(d.queued() > 900, "the deep flow queues");
    // A flow under its share of the store never waits behind a deep one.
    assert_eq!(d.offer(light, 7), Offer::Admitted(7));
    running.push_back(light);
    // And while both queue, they alternate.
    offer_many(&mut d, &mut running, light, 10);
    let (l, others) = serve(&mut d, &mut running, light, 20);
    assert!(l >= 8 && others >= 8, "light {l}, deep {others}");
}

#[test]
fn an_idle_flow_is_in_no_round_and_changes_no_share() {
    let mut d = Drr::new(1);
    let flows: Vec<FlowId> = (0..1000).map(|_| d.add(1)).collect();
    let (a, b) = (flows[10], flows[500]);
    assert_eq!(d.busy_flows(), 0);
    assert_eq!(d.offer(a, 1), Offer::Admitted(1));
    assert_eq!(d.offer(b, 2), Offer::Admitted(2), "under its share");
    assert_eq!(d.offer(b, 3), Offer::Queued);
    assert_eq!(d.busy_flows(), 2, "the 998 idle flows are not counted");
    assert_eq!(
        d.active.len(),
        1,
        "only the flow with a queue is in the round"
    );
    assert_eq!(
        d.window(a, 32, 1),
        16,
        "two busy flows of one weight share half each"
    );
    assert_eq!(
        finish(&mut d, a),
        vec![(b, 3)],
        "alone on the ring, b is not held back"
    );
    assert_eq!(finish(&mut d, b), vec![]);
    assert_eq!(finish(&mut d, b), vec![]);
    assert_eq!((d.busy_flows(), d.busy_weight, d.inflight()), (0, 0, 0));
    assert!(d.active.is_empty());
}

#[test]
fn a_flow_removed_mid_queue_gives_back_its_queue_and_its_late_commands_are_harmless() {
    let mut d = Drr::new(1);
    let gone = d.add(5);
    let other = d.add(1);
    assert_eq!(d.offer(other, 9), Offer::Admitted(9));
    assert_eq!(d.offer(gone, 1), Offer::Admitted(1));
    for i in 2..5 {
        assert_eq!(d.offer(gone, i), Offer::Queued);
    }
    assert_eq!(d.offer(other, 10), Offer::Queued);
    assert_eq!(d.remove(gone), vec![2, 3, 4]);
    // Its slot goes to a new flow; the removed flow's command finishing late must not be
    // counted against it.
    let newcomer = d.add(1);
    assert_eq!(newcomer.index, gone.index);
    assert_ne!(newcomer, gone);
    assert_eq!(finish(&mut d, gone), vec![(other, 10)]);
    assert_eq!(d.offer(newcomer, 5), Offer::Admitted(5));
    assert_eq!(finish(&mut d, other), vec![]);
    assert_eq!(finish(&mut d, other), vec![]);
    assert_eq!(finish(&mut d, newcomer), vec![]);
    assert_eq!((d.busy_flows(), d.inflight(), d.queued()), (0, 0, 0));
    // A removed flow's commands are not queued behind anyone.
    assert_eq!(d.offer(gone, 6), Offer::Admitted(6));
    assert!(d.remove(gone).is_empty());
}

#[test]
fn a_flow_whose_neighbour_hangs_still_runs_within_its_share() {
    let mut d = Drr::new(4);
    let hung = d.add(1);
    let live = d.add(1);
    // The hung flow fills the store and never finishes anything.
    for i in 0..4 {
        assert_eq!(d.offer(hung, i), Offer::Admitted(i));
    }
    let _ = d.offer(hung, 99);
    let mut running = VecDeque::new();
    offer_many(&mut d, &mut running, live, 100);
    assert_eq!(running.len(), 2, "its share of 4 slots among two flows");
    let (l, _) = serve(&mut d, &mut running, live, 98);
    assert_eq!(l, 98, "each of its completions starts its next command");
}

#[test]
fn a_new_weight_applies_from_the_next_round() {
    let mut d = Drr::new(10);
    let a = d.add(1);
    let b = d.add(1);
    let mut running = VecDeque::new();
    offer_many(&mut d, &mut running, b, 1);
    offer_many(&mut d, &mut running, a, 2000);
    offer_many(&mut d, &mut running, b, 1999);
    let (x, y) = serve(&mut d, &mut running, a, 200);
    assert!(x.abs_diff(y) <= 20, "equal weights: {x} and {y}");
    d.set_weight(a, 4);
    assert_eq!(d.busy_weight, 4 + 1);
    let (x, y) = serve(&mut d, &mut running, a, 500);
    let ratio = f64::from(x) / f64::from(y);
    assert!((3.0..=5.0).contains(&ratio), "about 4:1: {x} and {y}");
}

#[test]
fn the_window_follows_the_weights_and_never_falls_below_one() {
    let mut d = Drr::new(64);
    let big = d.add(3);
    let small = d.add(1);
    assert_eq!(d.window(big, 32, 1), 32, "nobody busy: the whole budget");
    let _ = d.offer(big, 0);
    assert_eq!(
        d.window(big, 32, 1),
        32,
        "alone on the ring: the whole budget"
    );
    assert_eq!(d.window(small, 32, 1), 8, "a newcomer counts itself in");
    let _ = d.offer(small, 0);
    assert_eq!(d.window(big, 32, 1), 24);
    assert_eq!(d.window(big, 32, 4), 6, "split among the target's sessions");
    assert_eq!(d.window(small, 32, 100), 1, "never less than one");
    let crowd: Vec<FlowId> = (0..100).map(|_| d.add(1)).collect();
    for f in &crowd {
        let _ = d.offer(*f, 0);
    }
    assert_eq!(d.window(crowd[0], 32, 1), 1);
    assert_eq!(d.window(big, 32, 1), 1);
}

#[test]
fn weights_are_clamped_into_range() {
    let mut d: Drr<u32> = Drr::new(1);
    let zero = d.add(0);
    let huge = d.add(u32::MAX);
    let _ = d.offer(zero, 0);
    let _ = d.offer(huge, 0);
    assert_eq!(d.busy_weight, 1 + u64::from(MAX_WEIGHT));
}
