from salespulse.cli import main

main()
