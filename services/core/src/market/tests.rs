//! Property tests of the market (filled in next).
