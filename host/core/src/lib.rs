//! The Wallance protocol core (placeholder while the first commit lands).
