//! The web app in-process against the simulator, through a cookie-keeping HTTP client that
//! follows redirects by hand (so every hop can be checked).

mod dashboard;
mod flow;
mod harness;
mod health;
mod limits;
mod storage;
