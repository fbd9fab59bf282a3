//! V4L2 cameras through the `v4l` crate (placeholder; filled in below in this issue).

use std::path::PathBuf;

use super::reconnect::Opener;
use super::{CaptureError, FrameSource, SourceConfig};
use crate::Outcome;

pub struct V4l2Opener {
    path: PathBuf,
    _cfg: SourceConfig,
}

impl V4l2Opener {
    pub fn new(path: PathBuf, cfg: SourceConfig) -> Self {
        Self { path, _cfg: cfg }
    }
}

impl Opener for V4l2Opener {
    fn path(&self) -> String {
        self.path.display().to_string()
    }
    fn open(&mut self) -> Result<Box<dyn FrameSource>, CaptureError> {
        Err(CaptureError::NoV4l2)
    }
}

pub fn probe_cli() -> Result<Outcome, CaptureError> {
    Err(CaptureError::NoV4l2)
}
