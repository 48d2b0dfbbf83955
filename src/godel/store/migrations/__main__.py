from godel.store.migrations import main

main()
