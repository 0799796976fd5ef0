use super::*;

/// Finishes one command of `id` and returns what the scheduler admitted in its place.
fn finish(d: &mut Drr<u32>, id: FlowId) -> Vec<(FlowId, u32)> {
    d.done(id)
}

/// Fills a capacity-1 ring so that everything offered afterwards queues.
fn occupied(d: &mut Drr<u32>, blocker: FlowId) {
    assert_eq!(d.offer(blocker, 0), Offer::Admitted(0));
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

#[test]
fn weights_split_the_admissions() {
    let mut d = Drr::new(1);
    let heavy = d.add(3);
    let light = d.add(1);
    let blocker = d.add(1);
    occupied(&mut d, blocker);
    for i in 0..400 {
        assert_eq!(d.offer(heavy, i), Offer::Queued);
        assert_eq!(d.offer(light, i), Offer::Queued);
    }
    let mut last = blocker;
    let mut counts = (0, 0);
    for _ in 0..400 {
        let admitted = finish(&mut d, last);
        assert_eq!(admitted.len(), 1, "capacity 1: one in, one out");
        last = admitted[0].0;
        if last == heavy {
            counts.0 += 1;
        } else {
            assert_eq!(last, light);
            counts.1 += 1;
        }
    }
    assert_eq!(counts, (300, 100), "3:1 by weight");
}

#[test]
fn a_deep_flow_cannot_starve_a_light_one() {
    let mut d = Drr::new(2);
    let deep = d.add(1);
    let light = d.add(1);
    let blocker = d.add(1);
    occupied(&mut d, blocker);
    assert_eq!(d.offer(deep, 0), Offer::Admitted(0));
    for i in 1..=1000 {
        assert_eq!(d.offer(deep, i), Offer::Queued);
    }
    assert_eq!(d.offer(light, 7), Offer::Queued);
    // The light command is next but one at most, not behind the thousand.
    let first = finish(&mut d, deep);
    let second = finish(&mut d, first[0].0);
    let served: Vec<FlowId> = first.iter().chain(&second).map(|(f, _)| *f).collect();
    assert!(served.contains(&light), "served {served:?}");
}

#[test]
fn an_idle_flow_is_in_no_round_and_changes_no_share() {
    let mut d = Drr::new(1);
    let flows: Vec<FlowId> = (0..1000).map(|_| d.add(1)).collect();
    let (a, b) = (flows[10], flows[500]);
    assert_eq!(d.busy_flows(), 0);
    assert_eq!(d.offer(a, 1), Offer::Admitted(1));
    assert_eq!(d.offer(b, 2), Offer::Queued);
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
        vec![(b, 2), (b, 3)],
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
    assert_eq!(d.offer(gone, 1), Offer::Admitted(1));
    assert_eq!(d.offer(other, 9), Offer::Queued);
    for i in 2..5 {
        assert_eq!(d.offer(gone, i), Offer::Queued);
    }
    assert_eq!(d.remove(gone), vec![2, 3, 4]);
    // Its slot goes to a new flow; the removed flow's command finishing late must not be
    // counted against it.
    let newcomer = d.add(1);
    assert_eq!(newcomer.index, gone.index);
    assert_ne!(newcomer, gone);
    assert_eq!(finish(&mut d, gone), vec![(other, 9)]);
    assert_eq!(d.offer(newcomer, 5), Offer::Queued);
    assert_eq!(finish(&mut d, other), vec![(newcomer, 5)]);
    assert_eq!(finish(&mut d, newcomer), vec![]);
    assert_eq!((d.busy_flows(), d.inflight(), d.queued()), (0, 0, 0));
    // A removed flow's commands are not queued behind anyone.
    assert_eq!(d.offer(gone, 6), Offer::Admitted(6));
    assert!(d.remove(gone).is_empty());
}

#[test]
fn a_new_weight_applies_from_the_next_round() {
    let mut d = Drr::new(1);
    let a = d.add(1);
    let b = d.add(1);
    let blocker = d.add(1);
    occupied(&mut d, blocker);
    for i in 0..100 {
        let _ = d.offer(a, i);
        let _ = d.offer(b, i);
    }
    d.set_weight(a, 4);
    assert_eq!(d.busy_weight, 4 + 1 + 1);
    let mut last = blocker;
    let mut a_count = 0;
    for _ in 0..50 {
        last = finish(&mut d, last)[0].0;
        a_count += u32::from(last == a);
    }
    assert!((39..=41).contains(&a_count), "about 4 of 5: {a_count}");
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
