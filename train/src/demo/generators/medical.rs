//! Medical: dosage, BMI, infusion and conversion problems, plus a bank of normal ranges.
//!
//! The calculations use exactly the math domain's worked steps ([`super::steps`]) and sit inside
//! the chat domain's house style ([`super::chat::house_style`]): a short lead line, the steps and
//! the answer, a `- ` caution or fact line, a closing. The fact questions are plain chat style.
//! So a medical answer needs both earlier domains at once, which is the overlap the method's
//! curriculum is meant to exploit.
//!
//! Dosage problems name no real medicine: every number the answer needs is in the question, so
//! nothing here claims a real dose.

use super::chat::{CLOSINGS, house_style};
use super::rng::Rng;
use super::steps::{Num, Op, Steps};
use crate::data::Example;

/// Pounds per kilogram, as rounded in clinical practice.
const LB_PER_KG: Num = Num::hundredths(220);

const CALC_LEADS: &[&str] = &["Let us work it out.", "Here are the steps.", "Here is the math."];
const DOSE_CAUTIONS: &[&str] = &[
    "Check the dose with a doctor or pharmacist.",
    "Never give more than the daily maximum.",
    "Use the cup that comes with the medicine.",
];

/// A calculation answer in the house style: lead, steps with the answer, one caution or fact.
fn calc(rng: &mut Rng, question: String, steps: Steps, decimals: u32, unit: &str, fact: &str) -> Example {
    let (worked, _) = steps.answer(decimals, unit);
    let lead = format!("{}\n{worked}", rng.pick(CALC_LEADS));
    let closing = *rng.pick(CLOSINGS);
    Example::new(question, house_style(&lead, &[fact], closing))
}

/// Body weight as the question states it, and the steps (if any) that make it kilograms.
fn weight_kg(rng: &mut Rng, s: &mut Steps, who: &str) -> (String, Num) {
    if rng.chance(0.15) {
        let lb = Num::int(rng.range(18, 90));
        (format!("{who} weighs {lb} lb."), s.op(lb, Op::Div, LB_PER_KG))
    } else {
        let kg = Num::int(rng.range(8, 40));
        (format!("{who} weighs {kg} kg."), kg)
    }
}

/// A weight-based dose: either split into doses, or a daily total held under a maximum (two
/// problems rather than one with both, so an example stays short).
fn dose(rng: &mut Rng) -> Example {
    let mut s = Steps::new();
    let (weighs, kg) = weight_kg(rng, &mut s, "A child");
    let per_kg = Num::int(*rng.pick(&[10, 15, 20, 25, 30, 40]));
    let daily = s.op(kg, Op::Mul, per_kg);
    let (q, unit) = if rng.chance(0.5) {
        let doses = Num::int(rng.range(2, 4));
        s.op(daily, Op::Div, doses);
        (format!("{weighs} Give {per_kg} mg/kg per day in {doses} doses. How many mg per dose?"), "mg per dose")
    } else {
        let max = Num::int(*rng.pick(&[500, 750, 1000]));
        s.cap(daily, max);
        (format!("{weighs} Give {per_kg} mg/kg per day, max {max} mg per day. How many mg per day?"), "mg per day")
    };
    let caution = *rng.pick(DOSE_CAUTIONS);
    calc(rng, q, s, 2, unit, caution)
}

fn liquid_volume(rng: &mut Rng) -> Example {
    let dose = Num::int(rng.range(5, 50) * 10);
    let strength = Num::int(*rng.pick(&[100, 125, 160, 200, 250]));
    let per = Num::int(5);
    let mut s = Steps::new();
    let parts = s.op(dose, Op::Div, strength);
    s.op(parts, Op::Mul, per);
    let q = format!("The dose is {dose} mg. The liquid has {strength} mg in {per} mL. How many mL should be given?");
    let caution = *rng.pick(DOSE_CAUTIONS);
    calc(rng, q, s, 2, "mL", caution)
}

/// The WHO adult BMI category of a BMI value.
fn bmi_category(bmi: Num) -> &'static str {
    if bmi < Num::hundredths(1850) {
        "underweight"
    } else if bmi < Num::int(25) {
        "normal weight"
    } else if bmi < Num::int(30) {
        "overweight"
    } else {
        "obese"
    }
}

fn bmi(rng: &mut Rng) -> Example {
    let mut s = Steps::new();
    let (weighs, kg) = if rng.chance(0.2) {
        let lb = Num::int(rng.range(100, 260));
        (format!("A person weighs {lb} lb"), s.op(lb, Op::Div, LB_PER_KG))
    } else {
        let kg = Num::int(rng.range(45, 120));
        (format!("A person weighs {kg} kg"), kg)
    };
    let m = Num::hundredths(rng.range(150, 195));
    let m2 = s.op(m, Op::Mul, m);
    let value = s.op(kg, Op::Div, m2).round_to(1);
    let category = bmi_category(value);
    let q = format!("{weighs} and is {m} m tall. What is the BMI?");
    let fact = match category {
        "underweight" => "A BMI under 18.5 is underweight.",
        "normal weight" => "A BMI of 18.5 to 24.9 is normal.",
        "overweight" => "A BMI of 25 to 29.9 is overweight.",
        _ => "A BMI of 30 or more is obese.",
    };
    calc(rng, q, s, 1, &format!("({category})"), fact)
}

fn infusion(rng: &mut Rng) -> Example {
    let volume = Num::int(*rng.pick(&[250, 500, 1000]));
    let hours = Num::int(*rng.pick(&[2, 4, 5, 6, 8]));
    let mut s = Steps::new();
    let rate = s.op(volume, Op::Div, hours);
    if rng.chance(0.5) {
        let factor = Num::int(*rng.pick(&[10, 15, 20, 60]));
        let a = s.op(rate, Op::Mul, factor);
        s.op(a, Op::Div, Num::int(60));
        let q = format!("Give {volume} mL over {hours} hours with {factor} drops per mL. How many drops per minute?");
        calc(rng, q, s, 0, "drops per minute", "Round drops to the nearest whole drop.")
    } else {
        let q = format!("Give {volume} mL over {hours} hours. What is the rate in mL per hour?");
        calc(rng, q, s, 2, "mL per hour", "Check the pump rate before you start it.")
    }
}

fn conversion(rng: &mut Rng) -> Example {
    let mut s = Steps::new();
    if rng.chance(0.5) {
        let f = Num::int(rng.range(95, 105));
        let a = s.op(f, Op::Sub, Num::int(32));
        let b = s.op(a, Op::Mul, Num::int(5));
        s.op(b, Op::Div, Num::int(9));
        let fact = *rng.pick(&["Normal body temperature is about 37 C.", "A temperature of 38 C or more is a fever."]);
        calc(rng, format!("A patient has a temperature of {f} F. What is it in C?"), s, 1, "C", fact)
    } else {
        let lb = Num::int(rng.range(20, 250));
        s.op(lb, Op::Div, LB_PER_KG);
        calc(rng, format!("Convert {lb} lb to kg."), s, 2, "kg", "One kg is about 2.2 lb.")
    }
}

/// (ways to ask, direct answer, points)
const FACTS: &[(&[&str], &str, &[&str])] = &[
    (
        &["What is a normal resting heart rate for adults?", "Is a resting heart rate of 80 normal?"],
        "A normal resting heart rate for adults is 60 to 100 beats per minute.",
        &[
            "Fit people often have a lower rate.",
            "Check it after you rest for a few minutes.",
            "See a doctor if it often stays above 100 at rest.",
        ],
    ),
    (
        &["What is normal body temperature?", "What temperature is a fever?"],
        "Normal body temperature is about 37 C, and 38 C or more is a fever.",
        &["It changes a little during the day.", "37 C is about 98.6 F.", "Drink water and rest when you have a fever."],
    ),
    (
        &["What do BMI numbers mean?", "What are the BMI ranges?"],
        "BMI is weight in kg divided by height in m squared.",
        &["Under 18.5 is underweight.", "18.5 to 24.9 is normal weight.", "25 to 29.9 is overweight.", "30 or more is obese."],
    ),
    (
        &["What is a normal breathing rate for adults?", "How many breaths per minute is normal?"],
        "A normal adult takes 12 to 20 breaths per minute at rest.",
        &["Count the breaths for one full minute.", "Fast breathing at rest needs medical advice.", "Children breathe faster than adults."],
    ),
    (
        &["What is a normal blood pressure?", "Is a blood pressure of 118/76 normal?"],
        "A normal blood pressure for adults is below 120/80 mmHg.",
        &[
            "The top number is the pressure when the heart beats.",
            "The bottom number is the pressure between beats.",
            "130/80 or more is high blood pressure.",
        ],
    ),
    (
        &["What is a normal blood oxygen level?", "What should my oxygen level be?"],
        "A normal blood oxygen level is 95 to 100 percent.",
        &["It is measured with a small clip on the finger.", "Cold hands can give a low reading.", "A low level needs medical advice."],
    ),
    (
        &["How long should I wash my hands?", "What is the right way to wash my hands?"],
        "Wash your hands with soap and water for at least 20 seconds.",
        &["Rub the backs of your hands and between your fingers.", "Rinse them under clean water.", "Dry them with a clean towel."],
    ),
    (
        &["How much sleep do adults need?", "Is 6 hours of sleep enough?"],
        "Most adults need 7 to 9 hours of sleep each night.",
        &["Go to bed at the same time each night.", "Too little sleep makes it hard to focus.", "Children and teens need more sleep."],
    ),
    (
        &["What is a normal fasting blood sugar?", "What blood sugar level is normal before breakfast?"],
        "A normal fasting blood sugar is 70 to 99 mg/dL.",
        &[
            "That is about 3.9 to 5.5 mmol/L.",
            "100 to 125 mg/dL may mean prediabetes.",
            "126 mg/dL or more on two tests may mean diabetes.",
        ],
    ),
];

fn fact(rng: &mut Rng) -> Example {
    let (asks, lead, points) = *rng.pick(FACTS);
    let k = rng.range(2, points.len() as i64) as usize;
    let chosen: Vec<&str> = rng.subset_in_order(points, k).into_iter().copied().collect();
    let (ask, closing) = (*rng.pick(asks), *rng.pick(CLOSINGS));
    Example::new(ask, house_style(lead, &chosen, closing))
}

pub(super) fn example(rng: &mut Rng) -> Example {
    match rng.below(6) {
        0 => dose(rng),
        1 => liquid_volume(rng),
        2 => bmi(rng),
        3 => infusion(rng),
        4 => conversion(rng),
        _ => fact(rng),
    }
}
