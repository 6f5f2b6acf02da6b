//! Replays every input kept in `fuzz/regressions/<target>/` (crashes found
//! by fuzzing, hostile files of issue 13) and every seed in
//! `fuzz/corpus/<target>/` through its target: none may panic or end in a
//! suspicious error, and every seed must be accepted.

use difi_fuzz::campaign::{Outcome, read_inputs, run_one};
use difi_fuzz::targets::{TARGETS, Verdict};

#[test]
fn regression_inputs_neither_panic_nor_reach_libtorch() {
    let mut replayed = 0;
    for target in TARGETS {
        for (path, input) in read_inputs(&[target.regressions_dir()]).unwrap() {
            let outcome = run_one(target, &input);
            assert!(outcome.finding().is_none(), "{}: {:?}", path.display(), outcome.finding());
            replayed += 1;
        }
    }
    assert!(replayed >= 10, "only {replayed} regression inputs found");
}

#[test]
fn every_seed_is_accepted() {
    for target in TARGETS {
        let seeds = read_inputs(&[target.corpus_dir()]).unwrap();
        assert!(!seeds.is_empty(), "no seeds for {}", target.name);
        for (path, input) in seeds {
            match run_one(target, &input) {
                Outcome::Verdict(Verdict::Accepted) => {}
                Outcome::Verdict(other) => panic!("{}: {other:?}", path.display()),
                Outcome::Panicked(message) => panic!("{}: panic: {message}", path.display()),
            }
        }
    }
}
