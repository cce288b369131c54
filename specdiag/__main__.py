from specdiag.cli import main

main()
