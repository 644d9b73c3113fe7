from kyphofhir.cli import main

main()
