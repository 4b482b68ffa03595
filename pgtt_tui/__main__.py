from pgtt_tui.cli import main

main()
