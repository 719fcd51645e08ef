from ..cli import main

if __name__ == "__main__":
    main(["bench", *__import__("sys").argv[1:]])
