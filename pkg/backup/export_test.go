package backup

// Names lists a directory for the external tests (the integration tests).
var Names = names
