//! The in-process bus: every message delivered exactly once across a consumer group,
//! backpressure when full, orderly close.

use normwatch_transport::bus::{memory_bus, Publisher, Subscriber, Topic, TransportError};
use std::collections::HashSet;
use std::time::Duration;

#[test]
fn producers_and_consumers_exchange_every_message_exactly_once() {
    let (publisher, bus) = memory_bus(64);
    let producers: Vec<_> = (0..3u32)
        .map(|p| {
            let mut publisher = publisher.clone();
            std::thread::spawn(move || {
                for i in 0..5000u32 {
                    let id = (p << 16 | i).to_le_bytes().to_vec();
                    publisher.publish(Topic::Flows, b"k", id).unwrap();
                }
            })
        })
        .collect();
    drop(publisher);
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let mut sub = bus.subscriber(Topic::Flows);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match sub.poll(Duration::from_millis(100)) {
                        Ok(Some(d)) => {
                            got.push(u32::from_le_bytes(d.payload[..4].try_into().unwrap()));
                            sub.commit(&d).unwrap();
                        }
                        Ok(None) => {}
                        Err(TransportError::Closed) => return got,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let all: Vec<u32> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(all.len(), 15_000);
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        15_000,
        "no duplicates"
    );
}

#[test]
fn full_queue_pushes_back_and_resumes() {
    let (mut publisher, bus) = memory_bus(2);
    publisher.try_publish(Topic::Alerts, b"a", vec![1]).unwrap();
    publisher.try_publish(Topic::Alerts, b"a", vec![2]).unwrap();
    assert_eq!(
        publisher.try_publish(Topic::Alerts, b"a", vec![3]),
        Err(TransportError::Full)
    );
    // Other topics are independent.
    publisher
        .try_publish(Topic::Evidence, b"e", vec![9])
        .unwrap();
    let mut blocked = publisher.clone();
    let t = std::thread::spawn(move || blocked.publish(Topic::Alerts, b"a", vec![3]));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!t.is_finished(), "publish waits while the queue is full");
    let mut sub = bus.subscriber(Topic::Alerts);
    assert_eq!(
        sub.poll(Duration::from_secs(1)).unwrap().unwrap().payload,
        [1]
    );
    t.join().unwrap().unwrap();
    assert_eq!(bus.depth(Topic::Alerts), 2);
}

#[test]
fn consumers_drain_then_see_closed() {
    let (mut publisher, bus) = memory_bus(8);
    publisher.publish(Topic::Flows, b"k", vec![1]).unwrap();
    drop(publisher);
    let mut sub = bus.subscriber(Topic::Flows);
    assert!(sub.poll(Duration::from_millis(10)).unwrap().is_some());
    assert_eq!(
        sub.poll(Duration::from_millis(10)),
        Err(TransportError::Closed)
    );
}
