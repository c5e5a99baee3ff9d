//! A backend for tests of the code around storage: it stores nothing, and the two calls tests need to
//! steer (appending messages, loading a room) run the closures given.

use super::{
    Backend, ChatMessage, GeoFenceChange, GeoLog, GeoPosition, GeoState, LogEntry, LogState, Page, StoreError,
};

type AppendFn = Box<dyn FnMut(&[ChatMessage]) -> Result<(), StoreError> + Send>;
type HeadFn = Box<dyn FnMut() -> Result<(u64, Page), StoreError> + Send>;

/// Succeeds at everything with nothing stored, except where a closure says otherwise.
pub struct Scripted {
    pub append: AppendFn,
    pub room_head: HeadFn,
}

impl Default for Scripted {
    fn default() -> Self {
        Scripted { append: Box::new(|_| Ok(())), room_head: Box::new(|| Ok((0, Page::default()))) }
    }
}

impl Backend for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn append(&mut self, batch: &[ChatMessage]) -> Result<(), StoreError> {
        (self.append)(batch)
    }
    fn room_head(&mut self, _: &str, _: usize) -> Result<(u64, Page), StoreError> {
        (self.room_head)()
    }
    fn history(&mut self, _: &str, _: Option<u64>, _: Option<u64>, _: usize) -> Result<Page, StoreError> {
        Ok(Page::default())
    }
    fn log_append(&mut self, _: &[LogEntry]) -> Result<(), StoreError> {
        Ok(())
    }
    fn log_load(&mut self, _: &str) -> Result<LogState, StoreError> {
        Ok(LogState::default())
    }
    fn log_compact(&mut self, _: &str, _: u64, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    fn log_bytes(&mut self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn geo_load(&mut self, _: &str) -> Result<GeoState, StoreError> {
        Ok(GeoState::default())
    }
    fn geo_fences(&mut self, _: &[GeoFenceChange]) -> Result<(), StoreError> {
        Ok(())
    }
    fn geo_log(&mut self, _: &[GeoLog]) -> Result<(), StoreError> {
        Ok(())
    }
    fn geo_positions(&mut self, _: &str, _: &[GeoPosition]) -> Result<(), StoreError> {
        Ok(())
    }
}
