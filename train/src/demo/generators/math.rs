//! Math: multi-step word problems answered with worked steps in the fixed format of
//! [`super::steps`] and nothing else (no lead line, no bullets): the bare procedure that the
//! medical domain reuses inside the chat style.
//!
//! Kinds: shopping totals (with change), rate x time over two legs, sharing, percentage
//! discounts, unit conversions. All numbers are computed by [`Steps`], never written by hand.

use super::rng::Rng;
use super::steps::{Num, Op, Steps};
use crate::data::Example;

const NAMES: &[&str] = &["Ana", "Ben", "Sam", "Mia", "Leo", "Zoe", "Tom", "Eva"];
/// (plural item, single extra item)
const SHOP_ITEMS: &[(&str, &str)] = &[("apples", "bag"), ("pens", "notebook"), ("cups", "teapot"), ("books", "lamp"), ("shirts", "hat")];
const ASK_SOLVE: &[&str] = &["", "Solve step by step. ", "Show your steps. "];

/// A price in dollars: a whole number or with 25/50/75 cents.
fn price(rng: &mut Rng, lo: i64, hi: i64) -> Num {
    Num::hundredths(rng.range(lo, hi) * 100 + 25 * rng.range(0, 3))
}

fn shopping(rng: &mut Rng) -> (String, String) {
    let name = *rng.pick(NAMES);
    let (items, extra) = *rng.pick(SHOP_ITEMS);
    let (n, p, q) = (Num::int(rng.range(2, 9)), price(rng, 1, 9), price(rng, 2, 20));
    let mut s = Steps::new();
    let t = s.op(n, Op::Mul, p);
    let total = s.op(t, Op::Add, q);
    if rng.chance(0.5) {
        // Pays with the smallest round bill that covers the total.
        let bill = [20, 50, 100, 200].into_iter().map(Num::int).find(|b| *b >= total).unwrap_or(Num::int(200));
        s.op(bill, Op::Sub, total);
        let q_text = format!(
            "{name} buys {n} {items} at {p} dollars each and a {extra} for {q} dollars, and pays with {bill} dollars. How much change does {name} get?"
        );
        (q_text, s.answer(2, "dollars").0)
    } else {
        let q_text = format!("{name} buys {n} {items} at {p} dollars each and a {extra} for {q} dollars. How much does {name} spend?");
        (q_text, s.answer(2, "dollars").0)
    }
}

/// (mover, rate unit, amount unit)
const RATES: &[(&str, &str, &str)] = &[
    ("A car drives", "km per hour", "km"),
    ("A cyclist rides", "km per hour", "km"),
    ("A machine makes", "parts per hour", "parts"),
    ("A pump moves", "liters per hour", "liters"),
];

fn rate_time(rng: &mut Rng) -> (String, String) {
    let (mover, per, unit) = *rng.pick(RATES);
    let (r1, t1) = (Num::int(rng.range(2, 12) * 5), Num::int(rng.range(2, 5)));
    let (r2, t2) = (Num::int(rng.range(2, 12) * 5), Num::int(rng.range(1, 4)));
    let mut s = Steps::new();
    let a = s.op(r1, Op::Mul, t1);
    let b = s.op(r2, Op::Mul, t2);
    s.op(a, Op::Add, b);
    let q = format!("{mover} {r1} {per} for {t1} hours, then {r2} {per} for {t2} hours. What is the total in {unit}?");
    (q, s.answer(0, unit).0)
}

fn sharing(rng: &mut Rng) -> (String, String) {
    let friends = rng.range(2, 6);
    if rng.chance(0.5) {
        // Cookies: whole boxes, chosen so the share is whole too.
        let per_box = rng.range(2, 6) * friends;
        let boxes = rng.range(2, 5);
        let mut s = Steps::new();
        let all = s.op(Num::int(boxes), Op::Mul, Num::int(per_box));
        s.op(all, Op::Div, Num::int(friends));
        let q = format!("{friends} friends share {boxes} boxes of {per_box} cookies equally. How many cookies does each friend get?");
        (q, s.answer(0, "cookies").0)
    } else {
        let (meal, tip) = (price(rng, 20, 90), Num::int(rng.range(2, 10)));
        let mut s = Steps::new();
        let all = s.op(meal, Op::Add, tip);
        s.op(all, Op::Div, Num::int(friends));
        let q =
            format!("{friends} friends share a bill of {meal} dollars plus a tip of {tip} dollars equally. How much does each friend pay?");
        (q, s.answer(2, "dollars").0)
    }
}

fn percentage(rng: &mut Rng) -> (String, String) {
    let (_, item) = *rng.pick(SHOP_ITEMS);
    let p = Num::int(rng.range(4, 40) * 5);
    let d = Num::int(*rng.pick(&[10, 15, 20, 25, 30, 40, 50]));
    let mut s = Steps::new();
    let z = s.op(p, Op::Mul, d);
    let off = s.op(z, Op::Div, Num::int(100));
    s.op(p, Op::Sub, off);
    let q = format!("A {item} costs {p} dollars. It is {d}% off today. What is the new price?");
    (q, s.answer(2, "dollars").0)
}

fn conversion(rng: &mut Rng) -> (String, String) {
    let mut s = Steps::new();
    match rng.below(3) {
        0 => {
            let (m, cm) = (Num::int(rng.range(1, 9)), Num::int(rng.range(5, 95)));
            let a = s.op(m, Op::Mul, Num::int(100));
            s.op(a, Op::Add, cm);
            (format!("A rope is {m} m and {cm} cm long. How long is it in cm?"), s.answer(0, "cm").0)
        }
        1 => {
            let (h, min) = (Num::int(rng.range(1, 6)), Num::int(rng.range(5, 55)));
            let a = s.op(h, Op::Mul, Num::int(60));
            s.op(a, Op::Add, min);
            (format!("A trip takes {h} hours and {min} minutes. How many minutes is that?"), s.answer(0, "minutes").0)
        }
        _ => {
            let (g, n) = (Num::int(rng.range(2, 9) * 50), Num::int(rng.range(2, 8)));
            let a = s.op(g, Op::Mul, n);
            s.op(a, Op::Div, Num::int(1000));
            (format!("One bag of rice weighs {g} g. How many kg do {n} bags weigh?"), s.answer(2, "kg").0)
        }
    }
}

pub(super) fn example(rng: &mut Rng) -> Example {
    let (question, answer) = match rng.below(5) {
        0 => shopping(rng),
        1 => rate_time(rng),
        2 => sharing(rng),
        3 => percentage(rng),
        _ => conversion(rng),
    };
    Example::new(format!("{}{question}", rng.pick(ASK_SOLVE)), answer)
}
