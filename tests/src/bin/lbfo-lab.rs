//! The namespace lab as a tool: `lbfo-lab demo`, `lbfo-lab bench`.
fn main() {}
