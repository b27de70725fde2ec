#compdef kaic

_kaic_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _KAIC_COMPLETE=complete_zsh kaic)
}

compdef _kaic_completion kaic