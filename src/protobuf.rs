//! Protocol-buffer wire format, as much as a caching proxy needs without generated code:
//! (being written).
