//! Runs lbfo's real, compiled XDP program in the kernel on frames we build,
//! through BPF_PROG_TEST_RUN, with its maps filled by lbfo's own map code.

use std::{fmt, time::Duration};

use anyhow::{Context as _, Result};
use aya::programs::{TestRun as _, TestRunOptions};
use lbfo::{core::Capacity, datapath::Datapath};

/// XDP verdicts (enum xdp_action).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Other(u32),
}

impl From<u32> for Action {
    fn from(v: u32) -> Self {
        match v {
            0 => Action::Aborted,
            1 => Action::Drop,
            2 => Action::Pass,
            3 => Action::Tx,
            4 => Action::Redirect,
            other => Action::Other(other),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XDP_{}", format!("{self:?}").to_uppercase())
    }
}

/// What the program did with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    /// The frame after the program ran (it may have been rewritten, grown or shrunk).
    pub output: Vec<u8>,
}

pub struct XdpTester {
    pub datapath: Datapath,
}

/// The kernel refuses test input shorter than an Ethernet header. Shorter
/// frames are padded to that length and `xdp_md.data_end` is set to the
/// real length: the kernel then puts only those bytes in the linear buffer,
/// which is all an XDP program can read, and the padding in a fragment.
const ETH_HLEN: usize = 14;

impl XdpTester {
    /// The program with its maps at the largest sizes the object allows,
    /// so the tables may use every table pair and backend id.
    pub fn new() -> Result<Self> {
        Self::with_capacity(Capacity::MAX)
    }

    /// The program with its maps sized for `capacity`, as the daemon sizes them.
    pub fn with_capacity(capacity: Capacity) -> Result<Self> {
        Ok(Self {
            datapath: Datapath::load(capacity)
                .context("loading lbfo's XDP program (run as root)")?,
        })
    }

    pub fn run(&mut self, frame: &[u8]) -> Result<Outcome> {
        let mut input = frame.to_vec();
        input.resize(frame.len().max(ETH_HLEN), 0);
        let ctx = xdp_md(0, frame.len() as u32);
        let mut output = vec![0u8; input.len() + 256];
        let result = self
            .datapath
            .program()
            .test_run(TestRunOptions {
                data_in: Some(&input),
                data_out: Some(&mut output),
                ctx_in: (frame.len() < ETH_HLEN).then_some(&ctx[..]),
                repeat: 1,
                ..Default::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN on a {}-byte frame", frame.len()))?;
        output.truncate(result.data_size_out as usize);
        // A frame shorter than the header was padded: only its own bytes count.
        if frame.len() < ETH_HLEN {
            output.truncate(frame.len());
        }
        Ok(Outcome {
            action: result.return_value.into(),
            output,
        })
    }

    /// Runs the frame `repeat` times in the kernel; returns the average time per run.
    pub fn time(&mut self, frame: &[u8], repeat: u32) -> Result<Duration> {
        time_program(self.datapath.program(), frame, repeat)
    }
}

/// Average time per run of any loaded XDP program on `frame`.
pub fn time_program(program: &aya::programs::Xdp, frame: &[u8], repeat: u32) -> Result<Duration> {
    let mut output = vec![0u8; frame.len() + 256];
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut output),
        repeat,
        ..Default::default()
    })?;
    Ok(result.duration)
}

/// struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
fn xdp_md(data: u32, data_end: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[0..4].copy_from_slice(&data.to_ne_bytes());
    ctx[4..8].copy_from_slice(&data_end.to_ne_bytes());
    ctx
}
