//! Chat: everyday questions answered in one house style.
//!
//! ```text
//! <one-line direct answer>
//! - <short point>        (2 to 4 of them)
//! <closing line>
//! ```
//!
//! Topics come from small banks (how-to, definitions, comparisons, advice, greetings) and the
//! wording of the question, the lead and the closing varies over a few templates, so the model
//! learns the style rather than a handful of strings. The vocabulary stays small on purpose.

use super::rng::Rng;
use crate::data::Example;

/// Closing lines shared by the chat and medical domains (the medical answers borrow the style).
pub(super) const CLOSINGS: &[&str] =
    &["I hope this helps!", "Let me know if you have more questions.", "Good luck!", "Feel free to ask if anything is unclear."];

/// The house style: the lead line, then `- point` lines, then the closing.
pub(super) fn house_style(lead: &str, points: &[&str], closing: &str) -> String {
    let mut out = String::from(lead);
    for p in points {
        out.push_str("\n- ");
        out.push_str(p);
    }
    out.push('\n');
    out.push_str(closing);
    out
}

/// (task, steps in order)
const HOW_TO: &[(&str, &[&str])] = &[
    (
        "boil an egg",
        &[
            "Put the egg in a pot of cold water.",
            "Bring the water to a boil.",
            "Cook it for 8 to 10 minutes.",
            "Cool it in cold water before you peel it.",
        ],
    ),
    (
        "make a cup of tea",
        &[
            "Boil some fresh water.",
            "Put a tea bag in a cup.",
            "Pour the hot water over it.",
            "Wait 3 to 5 minutes, then take the bag out.",
        ],
    ),
    (
        "plant a seed",
        &["Fill a small pot with soil.", "Press the seed into the soil.", "Water it a little.", "Keep the pot in a warm and bright place."],
    ),
    (
        "wash a shirt by hand",
        &[
            "Fill a bowl with warm water and a little soap.",
            "Let the shirt soak for a few minutes.",
            "Rub the dirty parts gently.",
            "Rinse it in clean water and hang it to dry.",
        ],
    ),
    (
        "save money",
        &[
            "Write down what you spend each week.",
            "Set a small goal for each month.",
            "Put some money aside as soon as you are paid.",
            "Wait a day before you buy something you do not need.",
        ],
    ),
    (
        "learn new words",
        &[
            "Read a little every day.",
            "Write each new word in a notebook.",
            "Use the word in a sentence.",
            "Review your list at the end of the week.",
        ],
    ),
    (
        "fall asleep faster",
        &[
            "Go to bed at the same time each night.",
            "Keep your room dark and cool.",
            "Put your phone away an hour before bed.",
            "Take slow and deep breaths.",
        ],
    ),
    (
        "clean a window",
        &[
            "Mix warm water with a little soap.",
            "Wipe the glass with a soft cloth.",
            "Dry it from top to bottom.",
            "Use a dry cloth to remove any marks.",
        ],
    ),
    (
        "make a simple salad",
        &[
            "Wash the lettuce and the vegetables.",
            "Cut them into small pieces.",
            "Put them in a large bowl.",
            "Add a little oil, lemon and salt.",
        ],
    ),
    (
        "write a short letter",
        &[
            "Start with a friendly greeting.",
            "Say why you are writing.",
            "Keep each part short and clear.",
            "End with a kind closing and your name.",
        ],
    ),
];

const HOW_TO_ASK: &[&str] = &["How do I {}?", "Can you tell me how to {}?", "What is the best way to {}?", "Explain how to {}."];
const HOW_TO_LEAD: &[&str] = &["Here is a simple way to {}.", "You can {} in a few easy steps.", "To {}, follow these steps."];

/// (term with its article, what it is, facts)
const DEFINITIONS: &[(&str, &str, &[&str])] = &[
    (
        "a computer",
        "a machine that follows instructions to work with data",
        &["It can store and change data very fast.", "Programs tell it what to do.", "Phones and laptops are computers."],
    ),
    (
        "a planet",
        "a large round body that moves around a star",
        &["The Earth is a planet.", "Our sun has eight planets.", "Planets do not make their own light."],
    ),
    (
        "a habit",
        "something you do often, almost without thinking",
        &["Good habits can make life easier.", "A new habit takes time to form.", "Small steps help you build one."],
    ),
    (
        "a budget",
        "a plan for how you will spend your money",
        &["It lists what you earn and what you spend.", "It helps you save for a goal.", "You can check it each month."],
    ),
    (
        "a recipe",
        "a list of steps for making a dish",
        &["It says which food you need.", "It gives the amounts to use.", "It tells you how long to cook."],
    ),
    (
        "an email",
        "a message you send from one computer to another",
        &["It arrives in a few seconds.", "It can carry files and pictures.", "You need an address to send one."],
    ),
    (
        "a battery",
        "a small store of power for a device",
        &["Phones and clocks use them.", "Some can be charged again.", "Old batteries should be recycled."],
    ),
    (
        "a forest",
        "a large area covered with trees",
        &["Many animals live there.", "Trees take in air and give out oxygen.", "Forests help keep the land cool."],
    ),
    (
        "a map",
        "a drawing that shows where places are",
        &["It helps you find your way.", "It uses signs for roads and rivers.", "Many maps are on phones now."],
    ),
    (
        "an idea",
        "a thought about what could be done",
        &["Good ideas often start small.", "Writing them down helps you keep them.", "Talking with others can improve them."],
    ),
];

const DEFINE_ASK: &[&str] = &["What is {}?", "Can you explain what {} is?", "Tell me what {} is."];

/// (first, second, lead, points)
const COMPARISONS: &[(&str, &str, &str, &[&str])] = &[
    (
        "tea",
        "coffee",
        "Both are warm drinks, but coffee usually has more caffeine than tea.",
        &["Tea is made from leaves.", "Coffee is made from roasted beans.", "Tea often tastes lighter."],
    ),
    (
        "a city",
        "a village",
        "A city is large and busy, while a village is small and quiet.",
        &["A city has more people and shops.", "A village is often close to farms.", "Life in a village is usually slower."],
    ),
    (
        "walking",
        "running",
        "Both are good exercise, but running is faster and harder.",
        &["Walking is easy on the body.", "Running burns more energy per minute.", "You can walk almost every day."],
    ),
    (
        "a book",
        "a film",
        "A book tells a story with words, while a film tells it with pictures and sound.",
        &["A book takes longer to finish.", "A film is often about two hours long.", "A book leaves more to your mind."],
    ),
    (
        "a laptop",
        "a phone",
        "A laptop is better for long work, while a phone is easier to carry.",
        &["A laptop has a bigger screen.", "A phone fits in your pocket.", "Both can send email and browse the web."],
    ),
    (
        "summer",
        "winter",
        "Summer is the warm season, while winter is the cold one.",
        &["Summer days are long.", "Winter nights are long.", "People wear light clothes in summer."],
    ),
];

const COMPARE_ASK: &[&str] = &["What is the difference between {} and {}?", "How is {} different from {}?", "Compare {} and {}."];

/// (question, lead, points)
const ADVICE: &[(&str, &str, &[&str])] = &[
    (
        "I feel tired all the time. What can I do?",
        "A few small changes can give you more energy.",
        &[
            "Sleep 7 to 9 hours each night.",
            "Drink enough water during the day.",
            "Take a short walk outside.",
            "See a doctor if it does not get better.",
        ],
    ),
    (
        "How can I focus better when I study?",
        "A calm place and short breaks help you focus.",
        &[
            "Put your phone in another room.",
            "Work for 25 minutes, then rest for 5.",
            "Start with the hardest task.",
            "Keep your desk clear.",
        ],
    ),
    (
        "I am nervous about a job interview. Any tips?",
        "Feeling nervous is normal, and good preparation helps.",
        &[
            "Learn about the company first.",
            "Practice your answers out loud.",
            "Arrive a few minutes early.",
            "Take a slow breath before you start.",
        ],
    ),
    (
        "How can I make new friends?",
        "Friends often come from doing things you enjoy with others.",
        &[
            "Join a club or a class.",
            "Say hello to people you see often.",
            "Ask questions and listen well.",
            "Be patient, since friendships take time.",
        ],
    ),
    (
        "How do I stay calm when I am angry?",
        "Pausing before you act is the key.",
        &["Count slowly to ten.", "Take a few deep breaths.", "Walk away for a moment.", "Talk about it when you feel calm."],
    ),
    (
        "How can I drink more water?",
        "Making water easy to reach is the simplest way.",
        &["Keep a bottle with you.", "Drink a glass with each meal.", "Add a slice of lemon for taste.", "Set a reminder on your phone."],
    ),
];

const GREETINGS: &[&str] = &["Hello!", "Hi there!", "Good morning!", "Hey, how are you?", "Hi! What can you do?"];
const GREETING_LEAD: &[&str] = &["Hello! I am doing well, thank you.", "Hi! It is nice to meet you.", "Hello! I am happy to help."];
const GREETING_POINTS: &[&str] = &[
    "I can answer everyday questions.",
    "I can explain short programs.",
    "I can work through math problems step by step.",
    "I can share simple health facts.",
];
const GREETING_CLOSE: &[&str] = &["What would you like to talk about?", "How can I help you today?"];

fn fill(template: &str, value: &str) -> String {
    template.replacen("{}", value, 1)
}

/// Capitalises the first letter (the definition bank stores terms in lower case).
fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

pub(super) fn example(rng: &mut Rng) -> Example {
    let closing = *rng.pick(CLOSINGS);
    match rng.below(5) {
        0 => {
            let (task, steps) = *rng.pick(HOW_TO);
            // Steps are a procedure: keep a prefix (3 or all 4) rather than dropping middle steps.
            let n = rng.range(3, steps.len() as i64) as usize;
            let (ask, lead) = (*rng.pick(HOW_TO_ASK), *rng.pick(HOW_TO_LEAD));
            Example::new(fill(ask, task), house_style(&fill(lead, task), &steps[..n], closing))
        }
        1 => {
            let (term, what, facts) = *rng.pick(DEFINITIONS);
            let k = rng.range(2, facts.len() as i64) as usize;
            let points: Vec<&str> = rng.subset_in_order(facts, k).into_iter().copied().collect();
            let lead = if rng.chance(0.5) { format!("{} is {what}.", capitalised(term)) } else { format!("In short, {term} is {what}.") };
            let ask = *rng.pick(DEFINE_ASK);
            Example::new(fill(ask, term), house_style(&lead, &points, closing))
        }
        2 => {
            let (a, b, lead, facts) = *rng.pick(COMPARISONS);
            let k = rng.range(2, facts.len() as i64) as usize;
            let points: Vec<&str> = rng.subset_in_order(facts, k).into_iter().copied().collect();
            let ask = *rng.pick(COMPARE_ASK);
            Example::new(fill(&fill(ask, a), b), house_style(lead, &points, closing))
        }
        3 => {
            let (question, lead, tips) = *rng.pick(ADVICE);
            let k = rng.range(2, tips.len() as i64) as usize;
            let points: Vec<&str> = rng.subset_in_order(tips, k).into_iter().copied().collect();
            Example::new(question, house_style(lead, &points, closing))
        }
        _ => {
            let k = rng.range(2, 3) as usize;
            let points: Vec<&str> = rng.subset_in_order(GREETING_POINTS, k).into_iter().copied().collect();
            let (hello, lead, close) = (*rng.pick(GREETINGS), *rng.pick(GREETING_LEAD), *rng.pick(GREETING_CLOSE));
            Example::new(hello, house_style(lead, &points, close))
        }
    }
}
