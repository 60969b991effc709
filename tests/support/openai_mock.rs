//! A local HTTP server that speaks OpenAI's transcription and chat-completion wire formats,
//! so the real async-openai client is exercised in tests. (Filled in by the transcription work.)
